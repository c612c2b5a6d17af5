"""`accelerate launch -m delphi.train RECIPE... [--set key=value ...]` (also `python -m delphi.train`)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe YAML files, merged in order")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field with a YAML value, e.g. --set training.learning_rate=1e-3 (repeatable)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoints of a different run in out_dir"
    )


def run(args: argparse.Namespace) -> dict:
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    recipe = load_recipe(args.recipes, args.overrides)
    return train(recipe, overwrite=args.overwrite)


def main(argv: list[str] | None = None) -> None:
    """Same as `delphi train ...`: one parser, one error format, one exit status."""
    from delphi.cli import main as delphi_main

    delphi_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
