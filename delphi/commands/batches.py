"""`delphi batches`: what every optimizer step trained on (its arguments and run function live with the
analysis in delphi.batches until that module is split)."""

from __future__ import annotations

import argparse

HELP = "what every optimizer step trained on, recomputed from the recipe and data (no training)"
DESCRIPTION = (
    "Recompute the data order of a run (a run directory, recipe file or hub repo) from its recipe and "
    "tokenized train split: for each step, every position of its global batch, the sequence's index in the "
    "train split and its tokens (with --decode, its text). --sequence lists the steps that trained on a "
    "sequence; --stat writes a function of each step's tokens."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from delphi.batches import add_arguments as add_batches_arguments

    add_batches_arguments(p)


def run(args: argparse.Namespace) -> None:
    from delphi.batches import run_cli

    run_cli(args)
