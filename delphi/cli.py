"""The `delphi` command (also `python -m delphi`): every command of delphi.commands, run by
delphi.exits.run_command (exit statuses and one-line errors)."""

from __future__ import annotations

from delphi.commands import build_parser
from delphi.exits import run_command


def main(argv: list[str] | None = None) -> None:
    run_command(build_parser(), argv)


if __name__ == "__main__":
    main()
