"""`delphi verify ORG/NAME [...]`: check published runs on the hub from metadata alone (delphi.hub.verify).

The one command whose exit status is its result: 1 when a repo has a problem (2 for bad input, as every
command), so scripts and CI can gate on it.
"""

from __future__ import annotations

import argparse
import sys

from delphi.errors import DelphiError
from delphi.inputs import is_hub_id

HELP = "check published runs on the hub from metadata alone (no weights downloaded); exit 1 if wrong"
DESCRIPTION = (
    "Check each repo's branches, their checkpoint.json, weights hashes, main and the manifest "
    "checkpoints.json; one line per problem, exit 0 when all is well, 1 when not."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repos", nargs="+", metavar="ORG/NAME", help="hub model repos of published delphi runs")


def run(args: argparse.Namespace) -> int:
    """Print every problem of every repo, one line each, then a line per repo; 1 if anything is wrong."""
    for repo in args.repos:
        if not is_hub_id(repo):
            raise DelphiError(f"{repo!r} is not a hub repo id; expected 'org/name'")
    from delphi.hub.verify import verify_repo

    failed = 0
    for repo in args.repos:
        problems, summary = verify_repo(repo)
        for line in problems:
            print(f"{repo}: {line}")
        print(f"{repo}: {f'{len(problems)} problem(s)' if problems else 'ok'} ({summary})")
        sys.stdout.flush()
        failed += bool(problems)
    return 1 if failed else 0
