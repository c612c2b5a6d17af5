"""How long does `delphi eval` take against the same work done with lm-evaluation-harness by hand?

(a) `delphi eval RUN --steps <8 checkpoints> --tasks T1,T2`, one fresh process: it builds the harness' task
    objects once and loads each checkpoint once for both tasks;
(b) the same 8 x 2 cells as a user runs them with the harness alone: `lm_eval run --model hf --model_args
    pretrained=RUN/stepN --tasks T1,T2 --include_path delphi/evaluate/tasks ...`, one process per
    checkpoint (each indexes the harness' task registry, builds the tasks and loads the model);
    the final checkpoint's numbers of both are printed side by side (they must agree);
(c) in-loop evaluation's cost, where RUN was trained with an `evaluation:` section: the seconds its tasks
    took at every checkpoint (`eval_tasks_seconds` in each checkpoint.json) as a fraction of the run's wall
    time (`wall_seconds` of its final checkpoint).

    python benchmarks/eval_sweep.py RUN [--tasks delphi_bpb,delphi_minimal_pairs] [--limit 100]
        [--batch-size 16] [--device cpu] [--json out.json]

RUN: a run directory with at least 8 checkpoints, e.g. `make demo`'s out/demo/llama2-demo trained with
`--set 'evaluation.tasks=[delphi_bpb,delphi_minimal_pairs]' --set evaluation.limit=100` for (c).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from delphi.evaluate.harness import BUILTIN_TASKS  # noqa: E402
from delphi.layout import list_checkpoints, read_checkpoint_meta  # noqa: E402


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, done


def eight_checkpoints(run: Path) -> list[int]:
    """8 checkpoints spread over the run (its first, its last and 6 between, evenly by index)."""
    steps = [step for step, _ in list_checkpoints(run)]
    if len(steps) < 8:
        raise SystemExit(f"{run} has {len(steps)} checkpoints; the benchmark needs 8")
    return [steps[round(i * (len(steps) - 1) / 7)] for i in range(8)]


def harness_numbers(folder: Path) -> dict[tuple[str, str], float]:
    results = json.loads(next(folder.rglob("results_*.json")).read_text())
    return {
        (task, key.split(",")[0]): value
        for task, metrics in results["results"].items()
        for key, value in metrics.items()
        if key.split(",")[0] in results["higher_is_better"][task]
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--tasks", default="delphi_bpb,delphi_minimal_pairs")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    steps = eight_checkpoints(args.run)
    common = ["--tasks", args.tasks, "--limit", str(args.limit), "--device", args.device]
    work = Path(tempfile.mkdtemp(prefix="eval-sweep-"))
    try:
        out = work / "delphi"
        delphi_seconds, _ = timed(
            [sys.executable, "-m", "delphi", "eval", str(args.run), "--steps", ",".join(map(str, steps)),
             "--out", str(out), "--batch-size", str(args.batch_size), *common]
        )  # fmt: skip
        harness_seconds = []
        for step in steps:
            seconds, _ = timed(
                [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
                 f"pretrained={args.run / f'step{step}'}", "--include_path", str(BUILTIN_TASKS),
                 "--batch_size", str(args.batch_size), "--output_path", str(work / f"harness{step}"), *common]
            )  # fmt: skip
            harness_seconds.append(seconds)
            print(f"lm_eval run, step {step}: {seconds:.1f} s", flush=True)
        with open(out / "results.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) == steps[-1]]
        ours = {(r["task"], r["metric"]): float(r["value"]) for r in rows}
        theirs = harness_numbers(work / f"harness{steps[-1]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(harness_seconds)
    report = {
        "checkpoints": steps,
        "tasks": args.tasks,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "delphi_eval_seconds": delphi_seconds,
        "lm_eval_seconds": total,
        "ratio": delphi_seconds / total,
        "final_checkpoint": {
            f"{t}/{m}": {"delphi": v, "lm_eval": theirs.get((t, m))} for (t, m), v in ours.items()
        },
    }
    print(
        f"delphi eval, 8 checkpoints x {len(args.tasks.split(','))} tasks, one process: {delphi_seconds:.1f} s"
    )
    print(
        f"lm_eval run, one process per checkpoint: {total:.1f} s  (ratio delphi/lm_eval {report['ratio']:.2f}x)"
    )
    for key, pair in report["final_checkpoint"].items():
        print(f"  step{steps[-1]} {key}: delphi {pair['delphi']!r}  lm_eval {pair['lm_eval']!r}")
    metas = [read_checkpoint_meta(folder) for _, folder in list_checkpoints(args.run)]
    in_loop = [m.get("eval", {}).get("eval_tasks_seconds") for m in metas]
    if all(s is not None for s in in_loop):
        wall = metas[-1]["wall_seconds"]
        report["in_loop"] = {"checkpoints": len(in_loop), "seconds": sum(in_loop), "wall_seconds": wall,
                             "fraction": sum(in_loop) / wall}  # fmt: skip
        print(
            f"in-loop evaluation: {sum(in_loop):.1f} s over {len(in_loop)} checkpoints of a {wall:.0f} s run "
            f"= {100 * sum(in_loop) / wall:.1f}% of its wall time"
        )
    else:
        print("in-loop evaluation: RUN was not trained with an `evaluation:` section at every checkpoint")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
