"""`delphi push RUN_DIR --repo ORG/NAME`: publish a run's local checkpoints that the hub lacks.

For a run trained offline, or one whose uploads failed. Each complete checkpoint is staged and held
against its branch `step{N}` (the final one also against `main`); only branches that are missing or
differ are uploaded, each verified afterwards, so running it twice uploads nothing the second time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from delphi.errors import DelphiError
from delphi.hub.client import ensure_repo
from delphi.hub.publish import publish_checkpoint_to_hub, stage_checkpoint, summarize
from delphi.inputs import check_local
from delphi.layout import (
    HUB_PUSH_STAGING_DIR,
    MAIN_BRANCH,
    branch_name,
    list_checkpoints,
    read_checkpoint_meta,
)


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    include_optimizer: bool = False,
    retries: int = 3,
    retry_wait: float = 5.0,
) -> dict:
    """Publish every complete checkpoint of `run_dir` to `repo_id`; returns the summary (see `summarize`)."""
    run_dir = check_local(str(run_dir), what="run directory")
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise DelphiError(
            f"{str(run_dir)!r} holds no complete checkpoints (step*/ folders with checkpoint.json); "
            "expected the out_dir of a delphi training run"
        )
    ensure_repo(repo_id, private=private)
    last_step, last_folder = checkpoints[-1]
    meta = read_checkpoint_meta(last_folder)
    final_step = last_step if meta.get("max_steps") is not None and last_step >= meta["max_steps"] else None
    staging_root = run_dir / HUB_PUSH_STAGING_DIR
    results = []
    try:
        for step, folder in checkpoints:
            is_final = step == final_step
            staged = stage_checkpoint(
                folder, staging_root, repo_id, include_optimizer=include_optimizer, is_final=is_final
            )
            try:
                branches = [branch_name(step)] + ([MAIN_BRANCH] if is_final else [])
                results += publish_checkpoint_to_hub(
                    staged, repo_id, branches, retries=retries, retry_wait=retry_wait
                )
            finally:
                shutil.rmtree(staged, ignore_errors=True)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return summarize(repo_id, results)
