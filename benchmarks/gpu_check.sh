#!/usr/bin/env bash
# Every check of delphi that needs a GPU, in one call (about 8 minutes on one H100/H200).
#
#   scripts/gpu_wheels.sh            # on the dev machine: wheels the GPU machine lacks, into .whl/
#   bash benchmarks/gpu_check.sh     # on the GPU machine, from the repository root (carry .whl)
#
# Checks, each under its own time limit, so one failure does not hide the others:
#   1. FSDP really shards (each rank's parameter shard sizes), a step folder holds the weights once, and
#      step folders resume across layouts (FSDP <-> one process): benchmarks/gpu_fsdp.py. With one GPU,
#      FSDP runs on one process (no sharding to see) next to plain one-process training.
#   2. DelphiTrainer tokens/s against a raw PyTorch loop, llama2-10m, bf16, eager and torch.compile.
#   3. The fused linear + cross-entropy loss: peak memory and tokens/s, llama2-50m at 256 x 512, bf16.
#   4. The Mamba scans on CUDA: numerics against transformers' reference (--check), then speed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
WORK=$(mktemp -d /tmp/delphi-gpu-XXXX)
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
status=0
check() {  # check NAME SECONDS COMMAND...: run one check, keep going whatever it does
  local name=$1 limit=$2; shift 2
  echo; echo "=== $name (at most ${limit}s)"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - started))s"
  [ "$rc" = 0 ] || status=1
}

echo "=== environment"
nvidia-smi -L
python3 -c "import torch, transformers, accelerate, datasets; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'gpus', torch.cuda.device_count(), 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, \
'datasets', datasets.__version__)" || { echo "missing packages: run scripts/gpu_wheels.sh and carry .whl"; exit 2; }
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
NPROC=$(( NGPU >= 2 ? 2 : 1 ))

echo "=== data (embedded corpus, vocab 4096, sequences of 256)"
python3 -m delphi corpus --out-dir "$WORK/corpus" --train-size 3000 --validation-size 200 >/dev/null \
  && python3 -m delphi tokenizer -i "$WORK/corpus" -f story -v 4096 --out-dir "$WORK/tok" >/dev/null 2>&1 \
  && python3 -m delphi dataset -i "$WORK/corpus" -f story -t "$WORK/tok" -l 256 --out-dir "$WORK/data" 2>&1 | tail -3 \
  || { echo "could not build the data"; exit 2; }

check fsdp 240 python3 benchmarks/gpu_fsdp.py --work "$WORK" --nproc "$NPROC"
check throughput 150 python3 benchmarks/train_throughput.py --models llama2-10m --batch 64 --steps 20
check fused-loss 150 python3 benchmarks/fused_loss.py --device cuda --dtype bfloat16 --model llama2-50m --batch 256 --check
check mamba 120 bash -c "python3 benchmarks/mamba_scan.py --device cuda --check && python3 benchmarks/mamba_scan.py --device cuda"
echo; echo "=== all GPU checks: $([ $status = 0 ] && echo OK || echo 'SOME FAILED (see above)'); logs in $OUT"
rm -rf "$WORK"
exit $status
