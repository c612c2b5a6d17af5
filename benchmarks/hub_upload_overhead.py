"""How much background hub uploads slow a run that checkpoints often: the same run with and without a hub repo.

    python benchmarks/hub_upload_overhead.py                   # demo Llama, 150 steps, a checkpoint every 10
    python benchmarks/hub_upload_overhead.py --steps 300 --every 5 --repeats 2

The hub is the local hub-compatible server of the tests (tests/hub_server.py) on 127.0.0.1, driven by
the real huggingface_hub client, so this measures delphi's side (staging, hashing, verification, the
worker thread competing for the CPU), not a network. Data: the embedded story corpus, tokenized as
`make demo` does. Prints wall time of each run (end of run = every upload finished and verified) and
the overhead ratio; the target is under 5%.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

TOKEN = "hf_" + "BenchmarkTokenForTheLocalHubOnly000"


def prepare_data(root: Path) -> None:
    from delphi.data.sequences import tokenize_dataset
    from delphi.data.stories import write_corpus
    from delphi.data.tokenizer import train_tokenizer

    write_corpus(root / "corpus", train_size=3000, validation_size=300, seed=0)
    train_tokenizer(str(root / "corpus"), feature="story", vocab_size=2048, out_dir=root / "tokenizer")
    tokenize_dataset(
        str(root / "corpus"), feature="story", splits=["train", "validation"], tokenizer=str(root / "tokenizer"),
        seq_len=128, out_dir=root / "dataset",
    )  # fmt: skip


def run_once(root: Path, name: str, *, steps: int, every: int, repo: str | None) -> tuple[float, dict | None]:
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    overrides = [
        f"tokenizer={root / 'tokenizer'}",
        f"data.path={root / 'dataset'}",
        f"out_dir={root / 'runs' / name}",
        f"training.max_steps={steps}",
        f"checkpoints.every={every}",
        "training.disable_tqdm=true",
        "training.logging_steps=50",
        f"hub.repo={repo or 'null'}",
    ]
    recipe = load_recipe([REPO / "recipes/demo/llama2-demo.yaml"], overrides)
    started = time.perf_counter()
    summary = train(recipe)
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=10, help="steps between regular checkpoints")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs (baseline, hub), interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the uploader shares the CPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"

    import torch

    torch.set_num_threads(args.threads)
    from hub_server import HubServer

    with tempfile.TemporaryDirectory(prefix="delphi-hub-bench-") as tmp:
        root = Path(tmp)
        print("preparing the demo corpus, tokenizer and dataset ...", flush=True)
        prepare_data(root)
        with HubServer(root / "hub", TOKEN) as server:
            server.use_in_this_process(root / "hf_home", TOKEN)
            base_times, hub_times = [], []
            for i in range(args.repeats):
                seconds, _ = run_once(root, f"base{i}", steps=args.steps, every=args.every, repo=None)
                base_times.append(seconds)
                seconds, summary = run_once(
                    root, f"hub{i}", steps=args.steps, every=args.every, repo=f"bench/demo{i}"
                )
                hub_times.append(seconds)
                hub = summary["hub"]
                upload_seconds = sum(r["seconds"] for r in hub["results"])
                print(
                    f"pair {i + 1}: no hub {base_times[-1]:.2f}s, hub {hub_times[-1]:.2f}s; "
                    f"{len(summary['checkpoints'])} checkpoints, {len(hub['published'])} branches verified "
                    f"on the hub, {len(hub['failed'])} failed; {upload_seconds:.2f}s of uploading in the background",
                    flush=True,
                )
    base, with_hub = statistics.median(base_times), statistics.median(hub_times)
    print(f"\nwall time, median of {args.repeats}: no hub {base:.2f}s, hub {with_hub:.2f}s")
    print(f"overhead: {100 * (with_hub / base - 1):+.1f}% (target < 5%)")


if __name__ == "__main__":
    main()
