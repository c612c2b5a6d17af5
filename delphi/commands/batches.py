"""`delphi batches`: its arguments and its run function; the work is in `delphi.evaluate.batches`."""

from __future__ import annotations

import sys
from pathlib import Path

from delphi import atomic
from delphi.errors import DelphiError

HELP = "what every optimizer step trained on, recomputed from the recipe and data (no training)"
DESCRIPTION = (
    "Recompute the data order of a run (a run directory, recipe file or hub repo) from its recipe and "
    "tokenized train split: for each step, every position of its global batch, the sequence's index in the "
    "train split and its tokens (with --decode, its text). --sequence lists the steps that trained on a "
    "sequence; --stat writes a function of each step's tokens."
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "source", metavar="RUN_OR_RECIPE", help="run directory, recipe YAML file, or hub model repo id"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, as in `delphi train` (e.g. --set data.path=/my/tokens)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--steps", help="optimizer steps (1-based): e.g. 1-100, 7, 1-3,50 or all (default all)"
    )
    which.add_argument(
        "--sequence",
        type=int,
        nargs="+",
        metavar="INDEX",
        help="train-split index of a sequence: list every step (over all epochs) that trained on it, with "
        "its loss there when the run has a training ledger",
    )
    parser.add_argument(
        "--decode", action="store_true", help="add the text of each sequence (recipe's tokenizer)"
    )
    parser.add_argument(
        "--no-tokens", action="store_true", help="leave the tokens out: step, position and index only"
    )
    parser.add_argument(
        "--stat",
        metavar="MODULE:FUNCTION",
        help="write f(step, tokens[batch, seq_len]) (JSON-able) for each step instead of the rows",
    )
    parser.add_argument(
        "--out", "-o", help="write the rows to a .parquet file (with --stat: a .jsonl file); default: print"
    )


def run(args) -> None:
    """`delphi batches`: cheap checks first (output name, recipe, --stat import), then the data."""
    from delphi.data.tokenizer import load_tokenizer
    from delphi.evaluate.batches import (
        describe,
        format_rows,
        ledger_losses,
        load_plan,
        load_source_recipe,
        parse_steps,
        row_batches,
        rows_for_steps,
        step_stats,
    )
    from delphi.recipe.usercode import import_function

    if args.out:
        suffix = ".jsonl" if args.stat else ".parquet"
        if Path(args.out).suffix.lower() != suffix:
            raise DelphiError(f"--out {args.out!r} must end in {suffix}")
    if args.stat and args.sequence:
        raise DelphiError("--stat computes one value per step: use it with --steps, not --sequence")
    recipe, recipe_dir = load_source_recipe(args.source, args.overrides)
    function = None
    if args.stat:
        function = import_function(args.stat, [recipe_dir] if recipe_dir else [])
    tokenizer = None
    if args.decode:
        tokenizer = load_tokenizer(recipe.tokenizer)
    plan, dataset = load_plan(recipe, recipe_dir)
    print(describe(plan), file=sys.stderr)

    if function is not None:
        steps = parse_steps(args.steps or "all", plan.total_steps)
        lines = step_stats(plan, dataset, steps, function, args.stat.rpartition(":")[2])
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            count = atomic.write_lines(args.out, lines)
            print(f"{count} step(s) -> {args.out}")
        else:
            for line in lines:
                print(line)
        return
    losses = None
    if args.sequence:
        rows = plan.sequence_steps(args.sequence)
        unseen = sorted(set(args.sequence) - set(rows[2].tolist()))
        if unseen:
            print(f"never trained on in the run's {plan.total_steps} steps: {unseen}", file=sys.stderr)
        losses = ledger_losses(args.source, recipe, rows)
    else:
        rows = rows_for_steps(plan, parse_steps(args.steps or "all", plan.total_steps))
    batches = row_batches(rows, dataset, tokens=not args.no_tokens, tokenizer=tokenizer, losses=losses)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        count = atomic.write_parquet(args.out, batches)
        print(f"{count} row(s) -> {args.out}")
    else:
        for line in format_rows(batches):
            print(line)
