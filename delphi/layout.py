"""What a run directory and a checkpoint hold, by name: the one home of delphi's on-disk layout.

```
{out_dir}/
  recipe.yaml              the run's fully resolved recipe (written with its first checkpoint)
  step{N}/                 one complete checkpoint per scheduled step (hub branch `step{N}`; the final
                           one is also on `main`); complete once `checkpoint.json` exists (written last)
    config.json  model.safetensors  generation_config.json    AutoModelForCausalLM.from_pretrained
    tokenizer.json  tokenizer_config.json ...                  AutoTokenizer.from_pretrained
    recipe.yaml  run_context.json                              the run's own files
    trainer_state.json  training_args.bin                      transformers' names
    optimizer.pt  scheduler.pt  rng_state*.pth  scaler.pt      resume state (by default only in the newest)
    checkpoint.json                                            step, tokens seen, losses; written last
  checkpoint-{N}/          transformers' own checkpoint while it is being written (renamed to step{N})
  .delphi.lock             held while a process trains this run (delphi.run_status)
  .delphi-attempt.json     how the last attempt a suite launched ended (delphi.suite)
  .delphi-replaced/        the previous run, kept aside by --overwrite until the new run's first checkpoint
  .hub-staging/  .hub-push-staging/   what the uploader (training's, `delphi push`'s) is about to upload
  .hub-resume/{branch}/    a hub checkpoint downloaded to resume from (`resume: org/name@step{N}`);
                           removed at the run's first checkpoint or end
  .resume-step{N}/         a resume view of step{N} for another process layout (delphi.train.resume)
  train.log                the run's output when a suite launched it (delphi.suite)
  ledger/                  with `ledger: true`: each trained sequence's loss at each step (delphi.train.ledger);
    steps{A}-{B}.parquet   one part per checkpoint interval: the rows of steps A..B
```

A checkpoint is named by a *reference*: a step folder (`RUN/stepN`), a run directory (its newest checkpoint,
or the `revision` step), or a hub repo id (`org/name`, with `revision` a branch, or `org/name@stepN`);
`checkpoint_ref` reads them the same way for every command and for `delphi.load`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from delphi.errors import DelphiError
from delphi.inputs import check_local_or_hub, parse_hub_ref

RECIPE_FILE = "recipe.yaml"
RUN_CONTEXT_FILE = "run_context.json"
META_NAME = "checkpoint.json"
TRAINER_STATE_NAME = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME (see delphi.compat)
MODEL_CARD = "README.md"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINER_CHECKPOINT_PREFIX = (
    "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR (see delphi.compat)
)
LOCK_FILE = ".delphi.lock"
ATTEMPT_FILE = ".delphi-attempt.json"  # `delphi suite`'s record of a run's last attempt
REPLACED_DIR = ".delphi-replaced"
# inside REPLACED_DIR: how far setting the old run aside got (delphi.train.outdir)
REPLACED_COMPLETE, REPLACED_COMMITTED = ".complete", ".committed"
HUB_STAGING_DIR = ".hub-staging"  # inside the run folder: same file system, so hard links work
HUB_PUSH_STAGING_DIR = ".hub-push-staging"  # not the training uploader's, so both can run at once
HUB_RESUME_DIR = ".hub-resume"  # a hub branch to resume from; removed once the run has a checkpoint
RESUME_VIEW_PREFIX = ".resume-"
SHARED_MARKER_PREFIX = ".delphi-shared-"  # probes that every process sees the same out_dir
RUN_LOG_FILE = "train.log"
LEDGER_DIR = "ledger"  # the training ledger (delphi.train.ledger), one parquet part per checkpoint interval
MAIN_BRANCH = "main"
EVAL_CELLS_DIR = "cells"  # `delphi eval`'s finished cells: cells/{run}/{branch}/{task}.json
EVAL_RESULTS = "results"  # `delphi eval`'s table: results.parquet and results.csv
MANIFEST_FILE = "checkpoints.json"  # on a hub repo's `main`: every published checkpoint (delphi.hub.manifest)

_STEP = re.compile(r"^step(\d+)$")
# transformers' checkpoint folder (PREFIX_CHECKPOINT_DIR) and delphi's older temp names: unfinished saves
_UNFINISHED = re.compile(rf"^(checkpoint-\d+|\.step\d+\.(tmp|old)|{re.escape(RESUME_VIEW_PREFIX)}step\d+)$")
# transformers' file names for what only resuming needs
_RESUME_STATE = re.compile(r"^(optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth)$")
# everything a run writes into its out_dir (other files there, e.g. a suite's log, are not the run's)
_RUN_ENTRY = re.compile(
    rf"^({re.escape(RECIPE_FILE)}|step\d+|checkpoint-\d+|\.step\d+\.(tmp|old)"
    rf"|{re.escape(HUB_STAGING_DIR)}|{re.escape(HUB_PUSH_STAGING_DIR)}|{re.escape(LEDGER_DIR)})$"
)


def step_name(step: int) -> str:
    """`step{N}`: the folder and the hub branch of the checkpoint after optimizer step N (Pythia naming)."""
    return f"step{step}"


branch_name = step_name


def parse_step(name: str) -> int | None:
    """N for `step{N}`, else None."""
    match = _STEP.match(name)
    return int(match.group(1)) if match else None


def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / step_name(step)


def trainer_checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    """Where transformers' Trainer writes the checkpoint of `step` before delphi renames it to `step{N}`."""
    return Path(out_dir) / f"{TRAINER_CHECKPOINT_PREFIX}-{step}"


def is_complete(folder: str | os.PathLike) -> bool:
    """A checkpoint is complete once its `checkpoint.json` exists (it is written last)."""
    return (Path(folder) / META_NAME).is_file()


def is_resume_state(path: str) -> bool:
    """Optimizer, scheduler, scaler and RNG state (a file name, not in a subfolder): what resume needs."""
    return "/" not in path and _RESUME_STATE.match(path) is not None


def has_resume_state(folder: str | os.PathLike) -> bool:
    """True if training can resume from `folder`: optimizer, scheduler and trainer state are all there."""
    folder = Path(folder)
    has_optimizer = (folder / "optimizer.pt").is_file() or (folder / "optimizer.bin").is_file()
    return has_optimizer and (folder / "scheduler.pt").is_file() and (folder / TRAINER_STATE_NAME).is_file()


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in `out_dir` as (step, folder), oldest first; incomplete folders are ignored."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for entry in out_dir.iterdir():
        step = parse_step(entry.name)
        if step is not None and entry.is_dir() and is_complete(entry):
            found.append((step, entry))
    return sorted(found)


def latest_resumable(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in `out_dir` that still has its optimizer state, or None."""
    for _, folder in reversed(list_checkpoints(out_dir)):
        if has_resume_state(folder):
            return folder
    return None


def unfinished_saves(out_dir: str | os.PathLike) -> list[Path]:
    """Folders a killed process left behind: half-written checkpoints (`checkpoint-N`, `.stepN.tmp`,
    `.stepN.old`) and resume views (`.resume-stepN`, see delphi.train.resume)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if _UNFINISHED.match(p.name) and p.is_dir())


def run_entries(out_dir: str | os.PathLike) -> list[Path]:
    """Everything in `out_dir` that belongs to the run (what --overwrite sets aside), sorted."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if _RUN_ENTRY.match(p.name))


def read_checkpoint_meta(folder: str | os.PathLike) -> dict:
    """The `checkpoint.json` of a checkpoint folder, with a clear error if it is missing or unreadable."""
    path = Path(folder) / META_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DelphiError(f"{str(folder)!r} is not a complete checkpoint: {META_NAME} is missing") from e
    except (OSError, ValueError) as e:
        raise DelphiError(f"cannot read {str(path)!r}: {e}") from e


@dataclass(frozen=True)
class CheckpointRef:
    """A run (local directory or hub repo) and, optionally, one of its checkpoints (`step{N}` or `main`)."""

    run: str
    branch: str | None
    local: bool

    @property
    def location(self) -> tuple[str, str | None]:
        """(path or repo id, revision) to hand to `from_pretrained` for this checkpoint."""
        if self.local:
            return (str(Path(self.run) / self.branch) if self.branch else self.run), None
        return self.run, self.branch


def step_folder_conflict(folder: str, option: str, other: str) -> str:
    """The message for a step folder given together with other checkpoints' names (`--revision`,
    `--branches`): the folder already is one checkpoint; the others are read from its run."""
    path = Path(folder).expanduser()
    run = str(path.parent)
    return (
        f"{folder!r} is checkpoint {path.name} of run {run!r}, but {option} {other!r} names another; "
        f"pass the run directory {run!r} with {option}, or the step folder alone"
    )


def checkpoint_ref(model: str | os.PathLike, revision: str | None = None) -> CheckpointRef:
    """Read a checkpoint reference the same way for every command.

    - a step folder (`out/run/step64`): that checkpoint of its run (`revision` absent or that step); any other
      folder holding a model (config.json) is a run of its own with no branch;
    - a run directory (holding `step*/`): checkpoint `revision`, or no branch (the caller picks);
    - a hub repo id `org/name`: branch `revision` (or none); `org/name@stepN`: that branch (`revision`
      absent or the same);
    Anything else is a DelphiError that says which of these was expected.
    """
    text = str(model)
    path = Path(text).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        if parse_step(path.name) is None:
            if revision is not None:
                raise DelphiError(
                    f"{text!r} is one model (not a run); --revision {revision!r} applies to runs and repos"
                )
            return CheckpointRef(str(path), None, local=True)  # a model folder outside any run
        if revision is not None and revision != path.name:
            raise DelphiError(step_folder_conflict(text, "--revision", revision))
        return CheckpointRef(str(path.parent), path.name, local=True)
    if path.is_dir():
        if revision is not None and not is_complete(path / revision):
            raise DelphiError(f"run {text!r} has no complete checkpoint {revision!r}")
        return CheckpointRef(str(path), revision, local=True)
    pinned = parse_hub_ref(text)
    if pinned is not None:
        if revision is not None and revision != pinned[1]:
            raise DelphiError(
                f"{text!r} names branch {pinned[1]} of {pinned[0]!r}, but --revision {revision!r} names another; "
                f"pass {pinned[0]!r} with --revision, or {text!r} alone"
            )
        return CheckpointRef(pinned[0], pinned[1], local=False)
    check_local_or_hub(text, what="a run directory, a step folder or a hub repo id 'org/name[@stepN]'")
    return CheckpointRef(text, revision, local=False)
