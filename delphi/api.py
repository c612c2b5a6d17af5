"""delphi from Python, for notebooks: find runs, list their checkpoints, load one.

```python
import delphi

runs = delphi.runs("out/")                          # or "org/" / "org/stories-": hub repos by prefix
ckpts = delphi.checkpoints("out/demo/llama2-demo")  # or "org/name": step, tokens_seen, eval_loss, reference
model, tok = delphi.load("org/name", step=64)       # or "out/demo/llama2-demo/step64", "org/name@step64"
```

Every function takes the references the commands take (a run directory, a step folder `RUN/stepN`, a hub
repo `org/name`, a hub branch `org/name@stepN`) and reads them through `delphi.evaluate.sources` and
`delphi.layout.checkpoint_ref`, so a notebook and `delphi generate` / `logprobs` / `curves` agree on what a
reference means. Only metadata is read until `load`: `checkpoint.json`, `recipe.yaml` and
`run_context.json` of each checkpoint (small files; from the hub, through its cache).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from delphi.data.tokenizer import load_tokenizer
from delphi.errors import DelphiError
from delphi.evaluate.sources import (
    ALL,
    checkpoint_meta,
    hub_map,
    is_local,
    list_branches,
    load_model,
    read_checkpoint_file,
    resolve,
    run_and_branches,
)
from delphi.hub.client import hub_error
from delphi.inputs import looks_like_path, missing_path_error, require_reachable
from delphi.layout import (
    RECIPE_FILE,
    RUN_CONTEXT_FILE,
    list_checkpoints,
    parse_step,
)
from delphi.run_status import run_status

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a run, from its `checkpoint.json`."""

    step: int
    branch: str  # `step{N}`: the folder of a run directory, the branch of a hub repo
    tokens_seen: int | None
    eval_loss: float | None
    reference: str  # what `delphi.load` and every command take: `RUN/step64` or `org/name@step64`
    run: str  # the run directory or hub repo id


@dataclass(frozen=True)
class Run:
    """One training run, local or on the hub, from its newest checkpoint's files."""

    name: str  # the recipe's name
    source: str  # run directory or hub repo id
    status: (
        str  # local: done | running | resumable | failed | pending (`delphi.run_status`); hub: done | partial
    )
    step: int  # newest checkpoint's step (0: none yet)
    max_steps: int | None
    eval_loss: float | None  # newest checkpoint's validation loss
    parameters: int | None
    architecture: str | None
    seeds: tuple[int | None, int | None]  # (seeds.init, seeds.data)
    recipe: dict[str, Any] | None  # the fully resolved recipe (recipe.yaml)
    checkpoints: int  # how many complete checkpoints


def checkpoints(run_or_repo: str | os.PathLike) -> list[Checkpoint]:
    """Every complete checkpoint of a run directory or hub repo (`step{N}` folders or branches), oldest first.

    Each one's numbers come from its own `checkpoint.json`; a step folder or `org/name@stepN` gives that one
    checkpoint. `main` (the final model on the hub) is not listed: it is the last step's twin.
    """
    run, branches = run_and_branches(str(run_or_repo))
    names = list_branches(run) if branches == ALL else list(branches)
    metas = hub_map(lambda branch: checkpoint_meta(run, branch), names)
    local = is_local(run)
    return [
        Checkpoint(
            step=int(meta.get("step", _step(branch))),
            branch=branch,
            tokens_seen=meta.get("tokens_seen"),
            eval_loss=meta.get("eval_loss"),
            reference=str(Path(run) / branch) if local else f"{run}@{branch}",
            run=run,
        )
        for branch, meta in zip(names, metas, strict=True)
    ]


def _step(branch: str) -> int:
    return parse_step(branch) or 0


def runs(path_or_hub_prefix: str | os.PathLike) -> list[Run]:
    """The runs under a local directory (itself a run, or a directory of runs), or the hub repos whose id
    starts with a prefix (`org/` every model repo of org, `org/stories-` those named so), sorted by source.

    Only metadata is read: each run's newest checkpoint's recipe, run context and `checkpoint.json`.
    """
    text = str(path_or_hub_prefix)
    if Path(text).expanduser().exists():
        return [_local_run(path) for path in _local_runs(Path(text).expanduser())]

    org, _, prefix = text.partition("/")
    if looks_like_path(text) or not org or "/" in prefix:
        raise missing_path_error(
            text, what="a run directory, a directory of runs or a hub prefix 'org/name-'"
        )
    repos = _hub_repos(org, prefix)
    return [run for run in hub_map(_hub_run, repos) if run is not None]


def _local_runs(path: Path) -> list[Path]:
    def is_run(folder: Path) -> bool:
        return bool(list_checkpoints(folder)) or (folder / RECIPE_FILE).is_file()

    if is_run(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and is_run(p))


def _details(recipe: Any, context: Any) -> dict:
    recipe = recipe if isinstance(recipe, dict) else None
    seeds = (recipe or {}).get("seeds") or {}
    model = (recipe or {}).get("model") or {}
    parameters = context.get("parameters") if isinstance(context, dict) else None
    return {
        "recipe": recipe,
        "seeds": (seeds.get("init"), seeds.get("data")),
        "architecture": model.get("architecture"),
        "parameters": parameters if isinstance(parameters, int) else None,
    }


def _local_run(path: Path) -> Run:
    status = run_status(path)
    newest = path / f"step{status.step}" if status.step else None
    recipe_path = newest / RECIPE_FILE if newest else path / RECIPE_FILE
    recipe = yaml.safe_load(recipe_path.read_text()) if recipe_path.is_file() else None
    context = status.run_context
    if context is None and newest and (newest / RUN_CONTEXT_FILE).is_file():
        context = json.loads((newest / RUN_CONTEXT_FILE).read_text())
    details = _details(recipe, context)
    return Run(
        name=str((details["recipe"] or {}).get("name") or path.name),
        source=str(path),
        status=status.state,
        step=status.step,
        max_steps=status.max_steps,
        eval_loss=status.eval_loss,
        checkpoints=len(status.checkpoints),
        **details,
    )


def _hub_repos(org: str, prefix: str) -> list[str]:
    from huggingface_hub import HfApi

    require_reachable(f"listing the hub repos of {org!r}")
    try:
        models = HfApi().list_models(author=org, search=prefix or None)
        return sorted(m.id for m in models if m.id.startswith(f"{org}/{prefix}"))
    except Exception as e:  # network errors come in many types
        raise hub_error("list the model repos of", org, e) from e


def _hub_run(repo: str) -> Run | None:
    """A hub repo as a run (None for a repo without `step{N}` branches: a tokenizer, not a run)."""
    branches = list_branches(repo)
    if not branches:
        return None
    newest = branches[-1]
    meta = checkpoint_meta(repo, newest)

    def read(name: str):
        try:
            return yaml.safe_load(read_checkpoint_file(repo, newest, name))  # JSON is YAML
        except (DelphiError, yaml.YAMLError):
            return None

    details = _details(read(RECIPE_FILE), read(RUN_CONTEXT_FILE))
    step, max_steps = int(meta.get("step", _step(newest))), meta.get("max_steps")
    return Run(
        name=str((details["recipe"] or {}).get("name") or repo.split("/")[-1]),
        source=repo,
        status="done" if max_steps is not None and step >= max_steps else "partial",
        step=step,
        max_steps=max_steps,
        eval_loss=meta.get("eval_loss"),
        checkpoints=len(branches),
        **details,
    )


def load(
    ref: str | os.PathLike, step: int | str | None = None, *, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of a checkpoint: plain `transformers` objects, the model in eval mode.

    `ref` is a run directory, a step folder, a hub repo `org/name` or branch `org/name@stepN`; `step` (an
    int or `step{N}`) picks a checkpoint of a run or repo, None the final model (see `resolve`). `device`
    defaults to cpu.
    """
    where, revision = resolve(ref, step)
    tokenizer = load_tokenizer(where, revision=revision)
    return load_model(ref, step, device=device), tokenizer
