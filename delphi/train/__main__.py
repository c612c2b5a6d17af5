"""`accelerate launch -m delphi.train RECIPE... [--set key=value ...]` (also `python -m delphi.train`).

The same command as `delphi train`: one parser, one error format, one exit status.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from delphi.cli import main as delphi_main

    delphi_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
