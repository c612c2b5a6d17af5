"""`delphi ledger`: its arguments and its run function; the work is in `delphi.evaluate.ledger`."""

from __future__ import annotations

import sys

from delphi.errors import DelphiError

HELP = "the sequences a run found hardest or easiest at a step, from its training ledger"
DESCRIPTION = (
    "Read a run's training ledger (recipe `ledger: true`: each trained sequence's loss at the step that "
    "trained on it, under the weights before that step's update) and list the K sequences with the highest "
    "(--hardest) or lowest (--easiest) loss at a step (default: the newest step it holds); --decode adds "
    "their text. --plot draws the spread of the per-sequence loss at every step."
)


def add_arguments(parser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run directory trained with `ledger: true`")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--hardest", type=int, metavar="K", help="the K sequences with the highest loss")
    which.add_argument("--easiest", type=int, metavar="K", help="the K sequences with the lowest loss")
    which.add_argument(
        "--plot", metavar="OUT.png", help="plot each step's per-sequence losses (median, 10-90%%, mean)"
    )
    parser.add_argument(
        "--step", type=int, metavar="N", help="the optimizer step (default: the newest the ledger holds)"
    )
    parser.add_argument(
        "--decode", action="store_true", help="add each sequence's text (the run's tokenizer and data)"
    )


def run(args) -> None:
    from delphi.evaluate.ledger import check_run, describe, format_ranked, plot_ledger, rank_at_step

    if args.plot:
        if args.step is not None or args.decode:
            raise DelphiError("--plot draws every step: use it without --step and --decode")
        path = check_run(args.run)
        written = plot_ledger(path, args.plot)
        print(describe(path), file=sys.stderr)
        print(f"plot -> {written}")
        return
    hardest = args.hardest is not None
    k = args.hardest if hardest else args.easiest
    path = check_run(args.run)
    step, table = rank_at_step(path, k, hardest=hardest, step=args.step)
    texts = None
    if args.decode:
        from delphi.data.tokenizer import load_tokenizer
        from delphi.evaluate.batches import load_plan, load_source_recipe, read_tokens

        recipe, recipe_dir = load_source_recipe(path)
        _, dataset = load_plan(recipe, recipe_dir)
        tokens = read_tokens(dataset, table.column("index").to_numpy())
        texts = load_tokenizer(recipe.tokenizer).batch_decode(tokens.tolist())
    print(describe(path), file=sys.stderr)
    print(f"{'hardest' if hardest else 'easiest'} {min(k, table.num_rows)} at step {step}", file=sys.stderr)
    for line in format_ranked(table, texts):
        print(line)
