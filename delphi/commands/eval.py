"""`delphi eval`: lm-evaluation-harness tasks over every checkpoint of a suite (table + plots)."""

from __future__ import annotations

import argparse

from delphi.commands.generate import DEVICE_HELP

HELP = "run lm-evaluation-harness tasks on every checkpoint of runs, suites or hub repos (table + plots)"
DESCRIPTION = (
    "Evaluate each chosen checkpoint of each run (run directories, directories of runs, hub repos with "
    "step{N} branches) on lm-evaluation-harness tasks: any task of the harness, delphi's built-in offline "
    "tasks (delphi_bpb, delphi_minimal_pairs) and YAML tasks under --include-path. --limit, --num-fewshot and "
    "--batch-size mean what they mean to lm_eval. Every finished (run, checkpoint, task) cell is saved at "
    "once; a rerun computes only what is missing or was computed with other settings. Writes OUT/results.parquet, "
    "OUT/results.csv and OUT/TASK.png (the task's main metric against tokens seen). Needs the eval extra: "
    'pip install -e ".[eval]".'
)


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_OR_DIR_OR_REPO",
        help="run directories, directories of runs, hub repo ids",
    )
    p.add_argument("--tasks", "-t", required=True, help="comma-separated task names, e.g. delphi_bpb,blimp")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--steps", help="checkpoints to evaluate, e.g. 1,64,final (default: every checkpoint)")
    which.add_argument(
        "--every", type=_whole, help="every checkpoint whose step is a multiple of N, and the final one"
    )
    p.add_argument("--out", "-o", default="eval", help="output directory (default ./eval)")
    p.add_argument("--limit", type=_whole, help="the first N documents of each task (as lm_eval --limit)")
    p.add_argument("--num-fewshot", type=_whole, help="few-shot examples (as lm_eval --num_fewshot)")
    p.add_argument("--batch-size", "-b", type=_whole, default=1, help="requests per forward pass (default 1)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument(
        "--include-path", action="append", default=[], help="a directory of task YAML files (may repeat)"
    )
    p.add_argument(
        "--metadata",
        help="JSON passed to the tasks as lm_eval --metadata, e.g. for delphi_bpb "
        '\'{"dataset": "DIR", "split": "validation", "feature": "story"}\'',
    )
    p.add_argument(
        "--add-bos-token",
        action="store_true",
        default=None,
        help="the harness' add_bos_token=True (context/continuation tasks from the hub; see README)",
    )


def run(args: argparse.Namespace) -> None:
    import json

    from delphi.errors import DelphiError
    from delphi.evaluate.sweep import Options, parse_steps, run_sweep

    metadata = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except ValueError as e:
            raise DelphiError(f"--metadata {args.metadata!r} is not JSON: {e}") from e
        if not isinstance(metadata, dict):
            raise DelphiError(f"--metadata {args.metadata!r} must be a JSON object")
    options = Options(
        tasks=args.tasks.split(","),
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        batch_size=args.batch_size,
        device=args.device,
        include_path=args.include_path,
        metadata=metadata,
        add_bos_token=args.add_bos_token,
    )
    done = run_sweep(args.runs, options, args.out, steps=parse_steps(args.steps), every=args.every)
    print(
        f"{done['computed']} cell(s) computed, {done['reused']} already done; {done['rows']} rows -> "
        + ", ".join(str(f) for f in done["files"])
    )
