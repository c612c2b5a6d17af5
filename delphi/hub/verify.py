"""Check a published run from hub metadata alone, without its weights (`delphi verify ORG/NAME`,
delphi.commands.verify).

Read: the repo's refs, each branch's file list (sizes, LFS sha256 of the weights) and its small JSON and
YAML files (`checkpoint.json`; `recipe.yaml` of the newest branch; `checkpoints.json` on `main`). Reported,
one line each (what Pythia's users found by hand, years later):

- a missing branch: a step of the recipe's checkpoint schedule (up to the newest published step) with no
  `step{N}` branch, or a branch without a model or `checkpoint.json`;
- a branch whose `checkpoint.json` says another step than its name;
- two `step{N}` branches holding the same weights;
- `main` differing from the final step (its weights or any other file of the checkpoint);
- a manifest entry the hub does not hold (no such branch, the branch moved to another commit, other
  weights), a `step{N}` branch the manifest does not list, or no manifest.

Exit status 0 when all is well, 1 when anything is wrong (2 for bad input, as every command).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import yaml

from delphi.errors import DelphiError
from delphi.hub.client import branch_heads, hub_error, remote_files
from delphi.layout import (
    MAIN_BRANCH,
    MANIFEST_FILE,
    META_NAME,
    MODEL_CARD,
    RECIPE_FILE,
    WEIGHTS_FILE,
    is_resume_state,
    parse_step,
    step_name,
)
from delphi.recipe.schedule import checkpoint_steps

READERS = 8  # concurrent requests: each branch costs a file listing and a small download


@dataclass
class Branch:
    name: str
    commit: str
    files: dict  # {path: RemoteFile}
    meta: dict | None  # checkpoint.json, None when missing or unreadable

    @property
    def weights(self) -> str | None:
        file = self.files.get(WEIGHTS_FILE)
        return None if file is None else (file.sha256 or file.git_sha1)


def _read_json(repo_id: str, name: str, commit: str):
    """A small file of the repo at `commit`, parsed (JSON or YAML); None when it is not there or unreadable."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        with open(hf_hub_download(repo_id, name, revision=commit), encoding="utf-8") as f:
            return json.load(f) if name.endswith(".json") else yaml.safe_load(f)
    except EntryNotFoundError:
        return None
    except (ValueError, yaml.YAMLError):
        return None


def _branch(repo_id: str, name: str, commit: str) -> Branch:
    files = remote_files(repo_id, commit) or {}
    meta = _read_json(repo_id, META_NAME, commit) if META_NAME in files else None
    return Branch(name, commit, files, meta if isinstance(meta, dict) else None)


def expected_steps(recipe: dict, meta: dict) -> list[int]:
    """The steps the recipe's checkpoint schedule saves, up to the run's end (`max_steps` of its newest
    `checkpoint.json`); [] when the recipe does not say."""
    schedule = recipe.get("checkpoints") or {}
    max_steps = meta.get("max_steps")
    if not isinstance(max_steps, int) or max_steps < 1:
        return []
    steps_per_epoch = None
    if schedule.get("per_epoch"):
        epoch, step = meta.get("epoch"), meta.get("step")
        if not (isinstance(epoch, (int, float)) and epoch > 0 and isinstance(step, int)):
            return []
        steps_per_epoch = max(1, round(step / epoch))
    try:
        return checkpoint_steps(
            max_steps,
            every=schedule.get("every") or None,
            steps=schedule.get("steps") or (),
            per_epoch=schedule.get("per_epoch"),
            steps_per_epoch=steps_per_epoch,
        )
    except DelphiError:
        return []


def _same_checkpoint(main: Branch, final: Branch) -> list[str]:
    """Files of the final step's checkpoint that `main` lacks or holds otherwise (not the model card, which
    says "final", nor the manifest or resume state)."""
    ignored = {MODEL_CARD, MANIFEST_FILE, ".gitattributes"}
    out = []
    for path in sorted(set(main.files) | set(final.files)):
        if path in ignored or is_resume_state(path):
            continue
        a, b = main.files.get(path), final.files.get(path)
        if a is None or b is None:
            out.append(f"{path} {'missing on main' if a is None else 'only on main'}")
        elif (a.sha256 or a.git_sha1) != (b.sha256 or b.git_sha1) or a.size != b.size:
            out.append(f"{path} differs")
    return out


def verify_repo(repo_id: str) -> tuple[list[str], str]:
    """(problems, one line that sums the repo up) from hub metadata alone."""
    try:
        heads = branch_heads(repo_id)
    except Exception as e:  # network errors come in many types
        raise hub_error("list the branches of", repo_id, e) from e
    names = [b for b in heads if parse_step(b) is not None]
    if not names:
        return ["no step{N} branches: not a published delphi run"], "nothing to verify"
    wanted = names + ([MAIN_BRANCH] if MAIN_BRANCH in heads else [])
    try:
        with ThreadPoolExecutor(READERS) as pool:
            read = list(pool.map(lambda b: _branch(repo_id, b, heads[b]), wanted))
            manifest = pool.submit(_read_json, repo_id, MANIFEST_FILE, heads.get(MAIN_BRANCH, MAIN_BRANCH))
            newest = read[len(names) - 1]
            recipe = pool.submit(_read_json, repo_id, RECIPE_FILE, newest.commit).result()
            manifest = manifest.result()
    except Exception as e:
        raise hub_error("read the branches of", repo_id, e) from e
    branches = {b.name: b for b in read}
    steps = {parse_step(b): branches[b] for b in names}
    problems: list[str] = []

    for step, branch in steps.items():
        if branch.weights is None:
            problems.append(f"{branch.name}: no {WEIGHTS_FILE} on the branch")
        if branch.meta is None:
            problems.append(f"{branch.name}: no readable {META_NAME} on the branch")
        elif branch.meta.get("step") != step:
            problems.append(f"{branch.name}: its {META_NAME} says step {branch.meta.get('step')}")

    newest_meta = newest.meta or {}
    if isinstance(recipe, dict) and newest_meta:
        for step in expected_steps(recipe, newest_meta):
            if step <= max(steps) and step not in steps:
                problems.append(
                    f"missing branch {step_name(step)}: the recipe's checkpoint schedule saves step {step}"
                )

    by_weights: dict[str, list[str]] = {}
    for branch in steps.values():
        if branch.weights is not None:
            by_weights.setdefault(branch.weights, []).append(branch.name)
    for sha, same in by_weights.items():
        if len(same) > 1:
            problems.append(f"{', '.join(same)}: the same weights ({WEIGHTS_FILE} sha256 {sha[:12]})")

    max_steps = newest_meta.get("max_steps")
    complete = isinstance(max_steps, int) and max(steps) >= max_steps
    main = branches.get(MAIN_BRANCH)
    if complete:
        if main is None:
            problems.append(f"no main branch: it should hold the final model ({newest.name})")
        else:
            differences = _same_checkpoint(main, newest)
            if differences:
                problems.append(
                    f"main differs from the final step {newest.name}: " + "; ".join(differences[:4])
                )
    elif main is not None and main.weights is not None:
        problems.append(
            f"main holds a model, but the newest step {newest.name} is not the final one ({max_steps} steps)"
        )

    if (
        manifest is None
        or not isinstance(manifest, dict)
        or not isinstance(manifest.get("checkpoints"), list)
    ):
        problems.append(
            f"main has no {MANIFEST_FILE}: publish with `delphi push RUN_DIR --repo {repo_id}` to write it"
        )
    else:
        listed = set()
        for entry in manifest["checkpoints"]:
            name = entry.get("branch") if isinstance(entry, dict) else None
            listed.add(name)
            branch = branches.get(name) if name else None
            if branch is None:
                problems.append(f"{MANIFEST_FILE} lists {name}, but the hub has no such branch")
                continue
            if entry.get("commit") != branch.commit:
                problems.append(
                    f"{MANIFEST_FILE} lists {name} at commit {str(entry.get('commit'))[:12]}, but the branch is at {branch.commit[:12]}"
                )
            if entry.get("sha256") != branch.weights:
                problems.append(f"{MANIFEST_FILE} lists other weights for {name} than the branch holds")
            if entry.get("step") != parse_step(name):
                problems.append(f"{MANIFEST_FILE} lists {name} as step {entry.get('step')}")
        unlisted = [b for b in names if b not in listed]
        if unlisted:
            problems.append(f"{MANIFEST_FILE} does not list {', '.join(unlisted)}")

    state = "complete" if complete else f"partial: newest {newest.name} of {max_steps} steps"
    return problems, f"{len(names)} step branches{' and main' if main else ''}, {state}"
