"""`delphi push RUN_DIR --repo ORG/NAME`: publish a run's local checkpoints that the hub lacks.

For a run trained offline, or one whose uploads failed. Each complete checkpoint is staged and held
against its branch `step{N}` (the final one also against `main`); only branches that are missing or
differ are uploaded, each verified afterwards, so running it twice uploads nothing the second time.
A repo holding a different run is refused (`delphi.hub.repo_run`) unless `overwrite`; what was published
is recorded in `checkpoints.json` on `main` (`delphi.hub.manifest`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from delphi.errors import DelphiError
from delphi.hub.client import branches_on_hub, ensure_repo
from delphi.hub.manifest import update_manifest
from delphi.hub.publish import describe_error, publish_checkpoint_to_hub, stage_checkpoint, summarize
from delphi.hub.repo_run import check_repo_run, replace_old_run
from delphi.inputs import check_local
from delphi.layout import (
    HUB_PUSH_STAGING_DIR,
    MAIN_BRANCH,
    RECIPE_FILE,
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
    overwrite: bool = False,
) -> dict:
    """Publish every complete checkpoint of `run_dir` to `repo_id`; returns the summary (see `summarize`).

    A repo that holds a different run is refused unless `overwrite`, which replaces it: its branches this
    run does not have are deleted, and `main` holds this run's final model (or, for a partial run, nothing).
    """
    run_dir = check_local(str(run_dir), what="run directory")
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise DelphiError(
            f"{str(run_dir)!r} holds no complete checkpoints (step*/ folders with checkpoint.json); "
            "expected the out_dir of a delphi training run"
        )
    last_step, last_folder = checkpoints[-1]
    if not (last_folder / RECIPE_FILE).is_file():
        raise DelphiError(f"{str(last_folder)!r} holds no {RECIPE_FILE}: not a delphi checkpoint")
    recipe = yaml.safe_load((last_folder / RECIPE_FILE).read_text())
    ensure_repo(repo_id, private=private)
    repo_run = check_repo_run(repo_id, recipe, overwrite=overwrite, run_dir=str(run_dir))
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
    published = {r.branch for r in results if r.status != "failed"}
    removed = replace_old_run(repo_id, repo_run, published)
    manifest = _record(
        repo_id, {b: f for s, f in checkpoints if (b := branch_name(s)) in published}, repo_run.replaces
    )
    return summarize(repo_id, results, on_hub=branches_on_hub(repo_id), manifest=manifest, removed=removed)


def _record(repo_id: str, published: dict, replace: bool) -> str:
    try:
        return update_manifest(repo_id, published, replace=replace)
    except Exception as e:  # the checkpoints are on the hub; the summary says the list is behind
        return describe_error(e)
