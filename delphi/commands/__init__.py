"""The `delphi` commands: one module each, with its `HELP`, `DESCRIPTION`, `add_arguments(parser)` and
`run(args)`; `delphi.cli` parses and dispatches, `delphi.exits` turns what ends a command into its exit
status. The train command is delphi.train.command, because `python -m delphi.train` (what launchers
run) must reach it from inside delphi/train/ without an import back up to this package.

A command module imports only argparse at its top and the stage it runs inside `run`: every stage
imports torch, transformers or datasets, and `delphi --help` must not wait for them. That is the one
place delphi imports its own modules lazily (with `delphi.train`'s `DelphiTrainer`, which the train
command's package would otherwise load at `--help`; delphi.mamba in `delphi.models.build_model`, so
that checking recipes (`delphi validate`, `delphi suite`'s checks) does not wait for torch; and the Triton
scan, whose `triton` is optional).
"""

from __future__ import annotations

import argparse

from delphi import __version__
from delphi.commands import (
    batches,
    corpus,
    curves,
    dataset,
    dynamics,
    generate,
    ledger,
    logprobs,
    push,
    suite,
    tokenizer,
    validate,
    verify,
)
from delphi.commands import (
    eval as eval_command,
)
from delphi.train import command as train

# in the order of the pipeline, as `delphi --help` lists them
COMMANDS = {
    "corpus": corpus,
    "tokenizer": tokenizer,
    "dataset": dataset,
    "train": train,
    "validate": validate,
    "generate": generate,
    "logprobs": logprobs,
    "curves": curves,
    "eval": eval_command,
    "batches": batches,
    "dynamics": dynamics,
    "ledger": ledger,
    "push": push,
    "verify": verify,
    "suite": suite,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="delphi",
        description="Train tokenizers, tokenize corpora and train suites of small language models.",
    )
    parser.add_argument("--version", action="version", version=f"delphi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser
