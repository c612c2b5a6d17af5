"""`accelerate launch -m delphi.train RECIPE... [--set key=value ...]` (also `python -m delphi.train`).

The same command as `delphi train` (delphi.train.command): the same arguments, error format and exit
statuses (delphi.exits).
"""

from __future__ import annotations

import argparse

from delphi.exits import run_command
from delphi.train import command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="delphi train", description=command.DESCRIPTION)
    command.add_arguments(parser)
    parser.set_defaults(func=command.run, command="train")
    run_command(parser, argv)


if __name__ == "__main__":
    main()
