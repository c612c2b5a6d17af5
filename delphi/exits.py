"""How a delphi command ends: its exit status and its last line, the same for every entry point.

`delphi CMD` and `python -m delphi.train` / `accelerate launch -m delphi.train` both run their command
through `run_command`: 0 on success, 2 on bad input (a DelphiError, printed as one line), 130 on Ctrl-C,
143 on SIGTERM, 141 when the reader of the output went away (see the README's exit statuses).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from delphi import quiet, signals
from delphi.errors import DelphiError


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Parse `argv` with `parser` and run the command it names (`args.func`, named `args.command`); exit 0
    on success (or the status its `run` returns: `delphi verify` exits 1 when a repo has a problem), 2 on a
    DelphiError, 130 on Ctrl-C, 143 on SIGTERM, 141 when the reader of its output went away (`| head`).

    Interruptions are exceptions, so every command cleans up as it does after an error (a training
    run that has no checkpoint yet puts its out_dir back as it was). With several processes on one
    machine, only the first of them prints the error: they all reached the same one.
    """
    args = parser.parse_args(argv)  # before the set-up below: `--help` answers at once
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet.quiet_http_requests()
    signals.install()
    speaks = os.environ.get("LOCAL_RANK", "0") == "0"
    try:
        code = args.func(args)  # None, or an exit status the command's result decides (delphi verify)
        sys.stdout.flush()  # here, so that a reader gone away is seen below and not at interpreter exit
        if code:
            sys.exit(code)
    except DelphiError as e:
        if speaks:
            print(f"delphi {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        signals.handled()
        if speaks:
            print(f"delphi {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)
    except signals.Stopped as e:
        signals.handled()
        if speaks:
            print(f"delphi {args.command}: stopped by SIGTERM; saved checkpoints are intact", file=sys.stderr)
        sys.exit(128 + e.signum)
    except BrokenPipeError:
        # the reader stopped early (`delphi batches ... | head`): end as `yes | head` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        sys.exit(128 + signal.SIGPIPE)
