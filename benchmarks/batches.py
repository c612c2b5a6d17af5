"""How long does `delphi batches` take over every step of a 10-epoch stories-sized run?

The stories suite: ~900k training sequences, global batch 256, 10 epochs (3,515 steps an epoch, 35,150
steps, 9.0M rows). Measured, each as the median of --repeats:
  (a) `step_indices` (the pure function) for every step, both data orders;
  (b) `sequence_steps`: every step that trained on one sequence, over the 10 epochs;
  (c) the command end to end in a fresh process, `delphi batches RECIPE --no-tokens --out x.parquet`
      (recipe, dataset length, every index, the parquet written), on a synthetic 900k-row token
      dataset; the first call also pays datasets' one-off parquet -> arrow cache conversion (as the first
      `delphi train` on that data does), so cold and warm are reported apart;
  (d) the same with tokens for steps 1-100 (what "touches tokens only for the steps asked" costs);
  (e) (c) in one process, stage by stage: recipe (its validation imports transformers), dataset length,
      every index, the parquet written.
The data order does not depend on seq_len, so the synthetic rows are short (--seq-len, default 16).

    python benchmarks/batches.py [--n 900000] [--batch 256] [--epochs 10] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_dataset(folder: Path, n: int, seq_len: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, rows in (("train", n), ("validation", 256)):
        values = rng.integers(3, 4096, size=rows * seq_len, dtype=np.int32)
        tokens = pa.FixedSizeListArray.from_arrays(values, seq_len).cast(pa.list_(pa.int32()))
        pq.write_table(pa.table({"tokens": tokens}), folder / f"{split}-00000.parquet")


def write_recipe(path: Path, data: Path, batch: int, epochs: int, seq_len: int) -> None:
    import yaml

    recipe = {
        "name": "stories-sized",
        "model": {
            "architecture": "LlamaForCausalLM",
            "vocab_size": 4096,
            "hidden_size": 16,
            "num_attention_heads": 2,
        },
        "tokenizer": "unused/by-batches",
        "data": {"path": str(data)},
        "seq_len": seq_len,
        "batch_size": batch,
        "seeds": {"init": 42, "data": 1337},
        "training": {"num_train_epochs": epochs},
    }
    path.write_text(yaml.safe_dump(recipe))


def cli(*args: str, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "delphi", "batches", *args], capture_output=True, text=True, env=env
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=900_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import numpy as np

    from delphi.train.order import sequence_steps, step_indices

    per_epoch = args.n // args.batch
    total = per_epoch * args.epochs
    steps = np.arange(1, total + 1)
    print(f"{args.n:,} sequences, batch {args.batch}: {per_epoch:,} steps an epoch, {total:,} steps, "
          f"{total * args.batch:,} rows; {os.cpu_count()} CPUs")  # fmt: skip
    figures = {"n": args.n, "batch": args.batch, "epochs": args.epochs, "steps": total}
    for order in ("hash", "delphi-v0.2"):
        seconds = timed(
            lambda order=order: step_indices(args.n, 1337, args.batch, order, steps), args.repeats
        )
        figures[f"step_indices_{order}_s"] = seconds
        print(f"(a) step_indices, every step, order {order}: {seconds:.2f} s")
    seconds = timed(lambda: sequence_steps(args.n, 1337, args.batch, "hash", total, [12345]), args.repeats)
    figures["sequence_steps_s"] = seconds
    print(f"(b) sequence_steps, one sequence over {args.epochs} epochs: {seconds:.2f} s")

    with tempfile.TemporaryDirectory(prefix="delphi-bench-batches-") as tmp:
        tmp = Path(tmp)
        write_dataset(tmp / "data", args.n, args.seq_len)
        write_recipe(tmp / "recipe.yaml", tmp / "data", args.batch, args.epochs, args.seq_len)
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1"}
        out = tmp / "b.parquet"
        figures["cli_cold_s"] = cli(str(tmp / "recipe.yaml"), "--no-tokens", "--out", str(out), env=env)
        print(f"(c) delphi batches --no-tokens, every step, first call (datasets cache built): "
              f"{figures['cli_cold_s']:.1f} s")  # fmt: skip
        warm = [
            cli(str(tmp / "recipe.yaml"), "--no-tokens", "--out", str(out), env=env)
            for _ in range(args.repeats)
        ]
        figures["cli_warm_s"] = statistics.median(warm)
        import pyarrow.parquet as pq

        rows = pq.read_metadata(out).num_rows
        assert rows == total * args.batch, rows
        print(f"(c) delphi batches --no-tokens, every step ({rows:,} rows): {figures['cli_warm_s']:.1f} s")
        figures["cli_tokens_100_steps_s"] = cli(
            str(tmp / "recipe.yaml"), "--steps", "1-100", "--out", str(out), env=env
        )
        print(f"(d) delphi batches --steps 1-100 with tokens: {figures['cli_tokens_100_steps_s']:.1f} s")
        from delphi.atomic import write_parquet
        from delphi.evaluate.batches import (
            load_plan,
            load_source_recipe,
            parse_steps,
            row_batches,
            rows_for_steps,
        )

        stages, started = {}, time.perf_counter()
        recipe, folder = load_source_recipe(tmp / "recipe.yaml")
        stages["recipe"] = time.perf_counter() - started
        plan, dataset = load_plan(recipe, folder)
        stages["dataset length"] = time.perf_counter() - started - sum(stages.values())
        rows = rows_for_steps(plan, parse_steps("all", plan.total_steps))
        stages["every index"] = time.perf_counter() - started - sum(stages.values())
        write_parquet(out, row_batches(rows, dataset, tokens=False))
        stages["parquet written"] = time.perf_counter() - started - sum(stages.values())
        figures["in_process_stages_s"] = stages
        print("(e) in one process: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
