"""`delphi dynamics`: weights, gradients and activations of every checkpoint, per layer and component."""

from __future__ import annotations

import argparse

from delphi.commands.generate import DEVICE_HELP

HELP = "what changed inside each model between checkpoints: weights, gradients, activations (table + plots)"
DESCRIPTION = (
    "Measure every checkpoint of each run (run directories, directories of runs, hub repos) per layer and "
    "component: weight norms, condition number, effective rank, sparsity and distance from the first and "
    "previous checkpoint; gradient norms and block-output norms and CKA on a fixed probe batch. Writes "
    "OUT/dynamics.parquet and .csv (one row per run, step, layer, component, quantity, metric) and one PNG "
    "per --plot. Checkpoints already measured on the same probe are skipped."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs", nargs="+", metavar="RUN_OR_DIR_OR_REPO", help="runs, directories of runs, hub repos"
    )
    p.add_argument("--steps", default="ALL", help="ALL (default) or steps, e.g. 1,8,64 (or step1,step8)")
    p.add_argument(
        "--probe",
        help="tokenized delphi dataset the probe batch comes from (default: the first run's own data.path)",
    )
    p.add_argument("--split", default="validation", help="split of the probe dataset (default validation)")
    p.add_argument("--feature", help="column of token ids (default: the recipe's data.feature, or tokens)")
    p.add_argument(
        "--sequences", type=int, default=64, help="probe sequences: the split's first N (default 64)"
    )
    p.add_argument("--out", "-o", default="dynamics", help="output folder (default ./dynamics)")
    p.add_argument(
        "--plot",
        action="append",
        metavar="QUANTITY.METRIC",
        help="a metric to plot against tokens seen, repeatable "
        "(default weight.rel_dist_first, grad.frobenius, activation.cka_final)",
    )
    p.add_argument("--device", help=DEVICE_HELP)


def run(args: argparse.Namespace) -> None:
    from delphi.dynamics.table import run_dynamics

    result = run_dynamics(
        args.runs,
        steps=args.steps,
        probe=args.probe,
        split=args.split,
        feature=args.feature,
        sequences=args.sequences,
        out_dir=args.out,
        plots=args.plot,
        device=args.device,
    )
    probe = result.probe
    print(
        f"probe: {probe['sequences']} x {probe['length']} tokens of {probe['dataset']} [{probe['split']}]; "
        f"{result.computed} checkpoint(s) measured, {result.skipped} already done"
    )
    print(f"{result.rows} rows -> {result.table} and {result.csv}")
    for png in result.plots:
        print(f"plot -> {png}")
