"""`delphi push`: publish a run's local checkpoints to the hub."""

from __future__ import annotations

import argparse

from delphi.errors import DelphiError

HELP = "publish a run's local checkpoints to the hub (each on branch step{N}, the final one on main)"
DESCRIPTION = (
    "Upload every complete checkpoint of RUN_DIR that is missing or different on the hub, verified file by "
    "file; running it again uploads nothing. Optimizer state stays local unless --include-optimizer. The "
    "token comes from HF_TOKEN or `hf auth login`. A repo holding a different run is refused unless --overwrite."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run's out_dir (holding step*/ folders)")
    p.add_argument("--repo", required=True, help="hub model repo, e.g. org/stories-llama2-100k")
    p.add_argument("--private", action="store_true", help="create the repo as private if it does not exist")
    p.add_argument(
        "--include-optimizer",
        action="store_true",
        help="also upload optimizer/scheduler/RNG state where a checkpoint still has it (to resume from the hub)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different run the repo holds (its branches this run does not have are deleted)",
    )


def run(args: argparse.Namespace) -> None:
    from delphi.hub.publish import format_summary
    from delphi.hub.push import push_run

    summary = push_run(
        args.run_dir,
        args.repo,
        private=args.private,
        include_optimizer=args.include_optimizer,
        overwrite=args.overwrite,
    )
    print(f"uploaded: {', '.join(summary['uploaded']) or 'nothing'}")
    print(f"already on the hub: {', '.join(summary['unchanged']) or 'nothing'}")
    print(format_summary(summary, args.run_dir))
    if summary["failed"]:
        failed = ", ".join(summary["failed"])
        raise DelphiError(f"{len(summary['failed'])} branch(es) failed to upload: {failed}")
    if summary["manifest"] not in ("updated", "unchanged"):
        raise DelphiError(f"checkpoints.json on main could not be updated: {summary['manifest']}")
