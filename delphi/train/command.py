"""The `delphi train` command (also `python -m delphi.train`, `accelerate launch -m delphi.train`):
its arguments and run function (delphi.commands lists it with the others)."""

from __future__ import annotations

import argparse

HELP = "train a model from YAML recipes (same as `python -m delphi.train`)"
DESCRIPTION = (
    "Train a model from YAML recipes, merged in order. For several processes use "
    "`accelerate launch [--config_file accelerate_configs/...] -m delphi.train RECIPE...`."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe YAML files, merged in order")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field with a YAML value, e.g. --set training.learning_rate=1e-3 (repeatable)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different run in out_dir (the old one is deleted once the new one has a checkpoint) "
        "and on the hub repo (hub.repo; its branches this run does not have are deleted at the end)",
    )


def run(args: argparse.Namespace) -> None:
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    summary = train(load_recipe(args.recipes, args.overrides), overwrite=args.overwrite)
    if not summary["main_process"]:
        return  # one summary per run, from the main process
    loss = summary["eval_loss"]
    if summary["complete_before"]:
        print(f"already complete, nothing to do: {summary['final_checkpoint']}")
    print(f"final validation loss: {'n/a' if loss is None else format(loss, '.4g')}")
    print(f"checkpoints ({len(summary['checkpoints'])}): {summary['out_dir']}")
