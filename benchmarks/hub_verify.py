"""How long `delphi verify` takes on a repo with many branches: a real run that checkpoints at every step,
published while it trains (`hub.repo`), then verified from hub metadata alone.

    python benchmarks/hub_verify.py                  # 150 steps: 150 step branches + main; target < 60 s
    python benchmarks/hub_verify.py --steps 300

The hub is the tests' local hub-compatible server (tests/hub_server.py) driven by the real huggingface_hub
client, so this measures delphi's requests (one refs listing, per branch a file listing and one small
download, plus the manifest and recipe), not a network: on the real hub each request costs more, which is
why verify reads `delphi.hub.verify.READERS` branches at once. Prints the training+upload time, the
verify time and the number of requests verify made.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from hub_upload_overhead import TOKEN, prepare_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="steps, each one a checkpoint and a branch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"

    import torch

    torch.set_num_threads(1)
    from hub_server import HubServer

    from delphi.recipe import load_recipe
    from delphi.train.run import train

    with tempfile.TemporaryDirectory(prefix="delphi-verify-bench-") as tmp:
        root = Path(tmp)
        print("preparing the demo corpus, tokenizer and dataset ...", flush=True)
        prepare_data(root)
        with HubServer(root / "hub", TOKEN) as server:
            server.use_in_this_process(root / "hf_home", TOKEN)
            overrides = [
                f"tokenizer={root / 'tokenizer'}",
                f"data.path={root / 'dataset'}",
                "data.validation_size=8",
                f"out_dir={root / 'run'}",
                f"training.max_steps={args.steps}",
                "checkpoints.every=1",
                "batch_size=8",
                "training.disable_tqdm=true",
                "training.logging_steps=50",
                "hub.repo=bench/verify",
            ]
            started = time.perf_counter()
            summary = train(load_recipe([REPO / "recipes/demo/llama2-demo.yaml"], overrides))
            trained = time.perf_counter() - started
            hub = summary["hub"]
            print(f"trained and published {len(hub['published'])} branches in {trained:.1f}s", flush=True)
            before = len(server.hub.requests)
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "delphi", "verify", "bench/verify"],
                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            seconds = time.perf_counter() - started
            print(done.stdout.strip() or done.stderr.strip())
            print(
                f"delphi verify: exit {done.returncode}, {seconds:.1f}s wall (process start included), "
                f"{len(server.hub.requests) - before} requests, {len(server.branches('bench/verify'))} branches"
            )


if __name__ == "__main__":
    main()
