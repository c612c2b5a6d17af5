"""`delphi validate`: check recipes without training."""

from __future__ import annotations

import argparse

from delphi.errors import DelphiError

HELP = "check recipes and print their models' parameter counts (no weights are allocated)"
DESCRIPTION = (
    "Load every recipe under the given files/directories, check it as `delphi train` does before it starts, "
    "build each model on the meta device, and print a table of architecture, parameters and tokens per step."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="recipe files or directories")


def run(args: argparse.Namespace) -> None:
    from delphi.validate import format_table, validate_paths

    rows = validate_paths(args.paths)
    print(format_table(rows))
    if any(row["error"] for row in rows):
        raise DelphiError(f"{sum(bool(r['error']) for r in rows)} of {len(rows)} recipe(s) have errors")
