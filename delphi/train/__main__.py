"""`accelerate launch -m delphi.train RECIPE... [--set key=value ...]` (also `python -m delphi.train`)."""

from __future__ import annotations

import argparse
import logging
import sys

from delphi.errors import DelphiError


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
    parser = argparse.ArgumentParser(
        prog="python -m delphi.train",
        description="Train a model from YAML recipes (launch with accelerate or torchrun for several processes).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except DelphiError as e:
        print(f"delphi train: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
