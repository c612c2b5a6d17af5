"""`delphi curves`: validation loss against tokens seen, for one or more runs."""

from __future__ import annotations

import argparse

HELP = "plot validation loss against tokens seen for one or more runs (PNG + CSV)"
DESCRIPTION = (
    "Read each checkpoint's checkpoint.json (nothing is recomputed) and plot validation loss against tokens "
    "seen (log x-axis), one line per recipe labelled by its name; the seeds of a recipe are drawn as their "
    "mean with a min-max band; colour follows model size, line style the architecture. Every run's numbers "
    "go to a CSV next to the PNG."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_OR_REPO",
        help="run directories, directories of runs, or hub model repo ids",
    )
    p.add_argument(
        "--out", "-o", default="curves.png", help="PNG to write (default curves.png; CSV beside it)"
    )
    p.add_argument("--title", help="figure title")


def run(args: argparse.Namespace) -> None:
    from delphi.evaluate.curves import expand_runs, plot_curves

    png, table = plot_curves(args.runs, args.out, title=args.title)
    print(f"loss curves of {len(expand_runs(args.runs))} run(s) -> {png} and {table}")
