"""One run per hub repo: publishing into a repo that holds a different run is refused, as `delphi train`
refuses an out_dir holding one (the same comparison: `Recipe.identity`), unless `--overwrite`.

The run a repo holds is the one whose `recipe.yaml` is on its newest `step{N}` branch. With `--overwrite`
the new run's branches replace the old ones, `main` gets the new final model, and the old run's branches
the new run does not have are deleted, so no branch mixes two runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import yaml

from delphi.errors import DelphiError
from delphi.hub.client import HUB_MANAGED, branch_heads, hub_error, remote_files
from delphi.layout import MAIN_BRANCH, MANIFEST_FILE, RECIPE_FILE, parse_step
from delphi.recipe import Recipe, identity_changes

log = logging.getLogger("delphi.hub")


@dataclass(frozen=True)
class RepoRun:
    """What publishing a run into a repo means: `replaces` another run (with --overwrite), whose
    `step{N}` branches were `old_branches`."""

    replaces: bool = False
    old_branches: list[str] = field(default_factory=list)


def hub_run_changes(repo_id: str, recipe: dict) -> tuple[list[str], list[str]]:
    """(how `recipe` differs from the run on the repo, `key: old -> new`; the repo's `step{N}` branches).
    No differences when the repo holds no step branches."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        steps = [b for b in branch_heads(repo_id) if parse_step(b) is not None]
    except Exception as e:  # network errors come in many types
        raise hub_error("list the branches of", repo_id, e) from e
    if not steps:
        return [], []
    newest = steps[-1]
    try:
        saved = yaml.safe_load(open(hf_hub_download(repo_id, RECIPE_FILE, revision=newest)).read())
    except EntryNotFoundError:
        return [f"branch {newest} has no {RECIPE_FILE}: not a delphi run"], steps
    except Exception as e:
        raise hub_error(f"download {RECIPE_FILE} (branch {newest}) from", repo_id, e) from e
    try:
        before = Recipe.identity_of(saved)
    except (AttributeError, TypeError) as e:
        return [f"the {RECIPE_FILE} of branch {newest} cannot be read as a recipe ({e})"], steps
    return identity_changes(before, Recipe.identity_of(recipe)), steps


def check_repo_run(repo_id: str, recipe: dict, *, overwrite: bool, run_dir: str) -> RepoRun:
    """Refuse a repo holding a different run (naming the differences) unless `overwrite`; with it, say what
    is replaced. `run_dir` is only named in the message."""
    changes, steps = hub_run_changes(repo_id, recipe)
    if not changes:
        return RepoRun()
    shown = "; ".join(changes[:5]) + (" ..." if len(changes) > 5 else "")
    if not overwrite:
        raise DelphiError(
            f"hub repo {repo_id!r} holds a different run than {run_dir!r} ({len(changes)} difference(s): {shown}); "
            "publish to another repo, or pass --overwrite to replace it (its branches this run does not "
            "have are deleted)"
        )
    log.warning(
        "hub %s: --overwrite replaces the run it holds (%d difference(s): %s; branches %s and main)",
        repo_id, len(changes), shown, ", ".join(steps),
    )  # fmt: skip
    return RepoRun(replaces=True, old_branches=steps)


def replace_old_run(repo_id: str, repo_run: RepoRun, published: set[str]) -> list[str]:
    """With --overwrite, once this run has uploaded: the replaced run's `step{N}` branches this run did not
    publish go, and its final model on `main` too unless this run published its own. A run that published
    no checkpoint (stopped before its first, every upload failed) leaves the replaced run whole, as it
    leaves a replaced out_dir; a branch whose upload failed goes, so that no branch mixes two runs.
    Returns the branches deleted."""
    if not repo_run.replaces or not {b for b in published if b != MAIN_BRANCH}:
        return []
    if MAIN_BRANCH not in published:
        clear_main(repo_id)
    return remove_other_branches(repo_id, repo_run, keep=published)


def remove_other_branches(repo_id: str, repo_run: RepoRun, keep: set[str]) -> list[str]:
    """Delete the replaced run's `step{N}` branches that are not in `keep` (the new run's); returns them."""
    from huggingface_hub import HfApi

    if not repo_run.replaces:
        return []
    api = HfApi()
    removed = []
    for branch in repo_run.old_branches:
        if branch not in keep:
            api.delete_branch(repo_id, branch=branch)
            removed.append(branch)
    if removed:
        log.info("hub %s: deleted the replaced run's branches %s", repo_id, ", ".join(removed))
    return removed


def clear_main(repo_id: str) -> None:
    """Delete every file on `main` but the hub's own and the manifest: a replaced run's final model must not
    stand for a new run that has not published its own."""
    from huggingface_hub import CommitOperationDelete, HfApi

    files = [p for p in (remote_files(repo_id, MAIN_BRANCH) or {}) if p not in HUB_MANAGED | {MANIFEST_FILE}]
    if files:
        HfApi().create_commit(
            repo_id,
            operations=[CommitOperationDelete(p) for p in files],
            commit_message="delphi: the replaced run's final model removed",
            revision=MAIN_BRANCH,
        )
