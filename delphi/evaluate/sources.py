"""Reading a run's checkpoints, wherever they live: a local run directory (`step{N}/` folders) or a hub
model repo (`step{N}` branches, the final model on `main`). Everything in `delphi.evaluate` reads
checkpoints through these few functions, so each analysis works the same on both; the names and the
rules for references are `delphi.layout`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from delphi.devices import resolve_device
from delphi.errors import DelphiError
from delphi.hub.client import hub_error
from delphi.layout import (
    CONFIG_FILE,
    MAIN_BRANCH,
    META_NAME,
    RECIPE_FILE,
    checkpoint_ref,
    list_checkpoints,
    parse_step,
    step_folder_conflict,
    step_name,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ALL = "ALL"


def is_local(model: str | os.PathLike) -> bool:
    return Path(model).exists()


def run_and_branches(
    model: str | os.PathLike, branches: str | list[str] = ALL
) -> tuple[str, str | list[str]]:
    """A step folder (or `org/name@stepN`) stands for its run with that one branch (`branches` must be ALL
    or that step); a run directory or repo id for itself."""
    ref = checkpoint_ref(model)
    if ref.branch is not None:
        if branches in (ALL, [ALL]) or _branch_list(branches) == [ref.branch]:
            return ref.run, [ref.branch]
        text = branches if isinstance(branches, str) else ",".join(branches)
        if not ref.local:
            raise DelphiError(
                f"{str(model)!r} names branch {ref.branch} of {ref.run!r}, but --branches {text!r} names "
                f"another; pass {ref.run!r} with --branches, or {str(model)!r} alone"
            )
        raise DelphiError(step_folder_conflict(str(model), "--branches", text))
    return str(model), branches


def _branch_list(branches: str | list[str]) -> list[str]:
    """`step1,step8` (or a list) as distinct names, in order."""
    names = branches.split(",") if isinstance(branches, str) else branches
    return list(dict.fromkeys(b.strip() for b in names if b.strip()))


def _check_source(model: str) -> None:
    ref = checkpoint_ref(model)
    if ref.local and not Path(model).is_dir():
        raise DelphiError(f"model {model!r} is not a run directory")
    if ref.local and ref.branch is None and (Path(model) / "config.json").is_file():
        raise DelphiError(
            f"{model!r} is a model folder outside a run; expected a run directory, a step folder or a hub repo"
        )


def list_branches(model: str | os.PathLike) -> list[str]:
    """The `step{N}` checkpoints of a run directory or hub repo, oldest first (`main` is not listed)."""
    model = str(model)
    _check_source(model)
    if is_local(model):
        return [folder.name for _, folder in list_checkpoints(model)]
    from huggingface_hub import HfApi

    try:
        refs = HfApi().list_repo_refs(model)
    except Exception as e:  # network errors come in many types
        raise DelphiError(
            f"{hub_error('list the branches of', model, e)} (and no local directory has that name)"
        ) from e
    steps = sorted(step for b in refs.branches if (step := parse_step(b.name)) is not None)
    return [step_name(s) for s in steps]


def select_branches(model: str | os.PathLike, branches: str | list[str] = ALL) -> list[str]:
    """`ALL` -> every `step{N}` checkpoint; `step1,step8` (or a list) -> those, checked to exist."""
    available = list_branches(model)
    if branches == ALL or branches == [ALL]:
        if not available:
            raise DelphiError(
                f"{str(model)!r} has no step checkpoints (no complete step{{N}} folder or branch)"
            )
        return available
    wanted = _branch_list(branches)
    if not wanted:
        raise DelphiError(f"--branches {branches!r} names no branch; expected ALL or e.g. step1,step8")
    remote_main = not is_local(model)  # a hub repo's final model is on main
    missing = [b for b in wanted if b not in available and not (remote_main and b == MAIN_BRANCH)]
    if missing:
        shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
        raise DelphiError(
            f"{str(model)!r} has no checkpoint {', '.join(missing)}; available: {shown or 'none'}"
        )
    return wanted


def load_location(model: str | os.PathLike, branch: str) -> tuple[str, str | None]:
    """(path or repo id, revision) to hand to `from_pretrained` for one checkpoint of a run."""
    return checkpoint_ref(model, branch).location


def read_checkpoint_file(model: str | os.PathLike, branch: str, name: str) -> str:
    """The text of one file of a checkpoint (e.g. `checkpoint.json`), from disk or the hub."""
    model = str(model)
    if is_local(model):
        path = Path(model) / branch / name
        try:
            return path.read_text(encoding="utf-8")
        except OSError as e:
            raise DelphiError(f"cannot read {str(path)!r}: {e}") from e
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model, name, revision=branch)).read_text(encoding="utf-8")
    except Exception as e:
        raise hub_error(f"download {name} (branch {branch}) from", model, e) from e


def checkpoint_meta(model: str | os.PathLike, branch: str) -> dict:
    """A checkpoint's `checkpoint.json` (step, tokens_seen, eval_loss, ...)."""
    text = read_checkpoint_file(model, branch, META_NAME)
    try:
        return json.loads(text)
    except ValueError as e:
        raise DelphiError(f"checkpoint.json of {str(model)!r} branch {branch} is not valid JSON: {e}") from e


def checkpoint_fingerprint(*metas: dict) -> str:
    """A short hash of checkpoints' `checkpoint.json` (step, tokens, losses, when it was saved): what tells a
    checkpoint from another saved under the same name (a run retrained with --overwrite into its out_dir, a
    branch pushed again), so numbers measured on one are never taken for the other's."""
    text = json.dumps(list(metas), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_name(model: str | os.PathLike, branches: list[str] | None = None) -> str:
    """The recipe's `name:` (from the newest checkpoint's recipe.yaml), else the folder or repo name."""
    model = str(model)
    fallback = Path(model.rstrip("/")).name
    branches = list_branches(model) if branches is None else branches
    if not branches:
        return fallback
    try:
        recipe = yaml.safe_load(read_checkpoint_file(model, branches[-1], RECIPE_FILE))
    except (DelphiError, yaml.YAMLError):
        return fallback
    name = recipe.get("name") if isinstance(recipe, dict) else None
    return str(name) if name else fallback


HUB_READERS = 8  # concurrent metadata reads from the hub: a 150-branch repo in seconds, not minutes


def hub_map(function, items: list) -> list:
    """`function` over `items`, a few at a time (each a hub request or two), results in order."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(HUB_READERS) as pool:
        return list(pool.map(function, items))


def resolve(ref: str | os.PathLike, step: int | str | None = None) -> tuple[str, str | None]:
    """(path or repo id, hub revision) of a checkpoint reference, for `from_pretrained`.

    `step` (an int or `step{N}`) picks a checkpoint of a run or repo; without one, a step folder or
    `org/name@stepN` is that checkpoint, a run directory its newest checkpoint (the final model once the run
    is complete) and a hub repo its `main` branch (the final model).
    """
    revision = step_name(step) if isinstance(step, int) else step
    ref_ = checkpoint_ref(ref, revision)
    if ref_.local and ref_.branch is None:
        if (Path(ref_.run) / CONFIG_FILE).is_file():
            return ref_.run, None  # a model folder that is not part of a run
        saved = list_checkpoints(ref_.run)
        if not saved:
            raise DelphiError(f"{str(ref)!r} holds no model (config.json) and no complete step checkpoints")
        return str(saved[-1][1]), None
    return ref_.location


def load_model(
    ref: str | os.PathLike, step: int | str | None = None, *, device: str | None = None
) -> PreTrainedModel:
    """The model of a checkpoint (see `load`), in eval mode on `device` (default cpu)."""
    device = resolve_device(device or "cpu")
    where, revision = resolve(ref, step)  # a bad reference fails before transformers is imported
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(where, revision=revision)
    except Exception as e:
        if Path(where).exists():
            raise DelphiError(f"could not load a model from {where!r}: {e}") from e
        raise hub_error(
            f"load {('branch ' + revision) if revision else 'the main branch'} of", where, e
        ) from e
    return model.to(device).eval()
