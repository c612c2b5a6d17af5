"""`delphi logprobs`: next-token log-probabilities of a dataset, per checkpoint."""

from __future__ import annotations

import argparse

from delphi.commands.generate import DEVICE_HELP

HELP = "next-token log-probabilities of every token of a dataset, for each checkpoint"
DESCRIPTION = (
    "Score every sequence of a tokenized dataset with each checkpoint of a run (local run directory or hub "
    "repo with step* branches). Writes one dataset per checkpoint, column `logprobs` (NaN at position 0): "
    "OUT_DIR/BRANCH/SPLIT-00000.parquet and/or branch BRANCH of a hub dataset repo. Checkpoints already "
    "done are skipped."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", help="run directory, hub model repo id, or step folder (that one checkpoint of its run)"
    )
    p.add_argument("--branches", default="ALL", help="ALL (every step* checkpoint) or e.g. step1,step64")
    p.add_argument("--dataset", "-i", required=True, help="tokenized dataset: local dir or hub dataset id")
    p.add_argument(
        "--split", "-s", default="validation", help="split, with optional slicing (default validation)"
    )
    p.add_argument("--feature", "-f", default="tokens", help="column of token ids (default tokens)")
    p.add_argument("--out-dir", help="local directory for the results")
    p.add_argument("--out-repo", help="hub dataset repo to push the results to, one branch per checkpoint")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="sequences per forward pass (default 32)")
    p.add_argument("--device", help=DEVICE_HELP)


def run(args: argparse.Namespace) -> None:
    from delphi.evaluate.logprobs import logprobs_for_checkpoints

    results = logprobs_for_checkpoints(
        args.model,
        args.branches,
        dataset=args.dataset,
        split=args.split,
        feature=args.feature,
        out_dir=args.out_dir,
        out_repo=args.out_repo,
        batch_size=args.batch_size,
        device=args.device,
    )
    for branch, info in results.items():
        mean = f", mean logprob {info['mean_logprob']:.4f}" if "mean_logprob" in info else ""
        print(f"{branch}: {info['status']}{mean} -> {', '.join(info['location'])}")
