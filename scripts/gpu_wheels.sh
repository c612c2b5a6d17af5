#!/usr/bin/env bash
# Wheels of what delphi needs and the GPU machine of the device tool lacks (it has torch, transformers,
# accelerate, tokenizers, safetensors, pyarrow, ...; no network), for its Python 3.12, into .whl/
# (git-ignored through .git/info/exclude). Then: device run with carry [".whl"] and
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d .whl \
  "transformers==5.24.0" "accelerate==1.15.0" "datasets==5.2.0" "mambapy==1.2.0" dill multiprocess xxhash \
  "fsspec<=2026.12.0"
ls -la .whl
