"""What a training run does with its `out_dir`, decided before anything is touched.

The rules, in the order they apply:

- A run *exists* in an out_dir once it has a complete checkpoint (`step{N}/checkpoint.json`). Leftovers of
  a start that failed before its first checkpoint (a `recipe.yaml`, an unfinished `checkpoint-{N}`) are
  not a run: the corrected command is never refused because of them.
- A complete run (its newest checkpoint is the final step) is left exactly as it is: a rerun prints
  where it is and exits 0, whatever the process layout.
- A different run (another model, data, seeds, batch or optimizer: `Recipe.identity`) is refused unless
  `--overwrite`, which replaces only a run that cannot go on as this recipe: a different one, one with
  `resume: never`, or one without optimizer state. The same run, complete or partial, is finished or left
  as it is (so a loop that passes `--overwrite` stays safe to rerun). The old run is *set aside* inside the out_dir (`.delphi-replaced/`) when
  training starts, and deleted only once the new run has written its first checkpoint. If the new run
  fails before that, the old run is moved back; if the process is killed (Ctrl-C, SIGKILL), the next
  delphi command that opens the out_dir moves it back first.
- A partial run resumes from its newest checkpoint that still has optimizer state.
- One process trains an out_dir at a time (`.delphi.lock`, an flock held for the whole run:
  `delphi.run_status.hold_run_lock`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from delphi.errors import DelphiError
from delphi.hub.publish import download_checkpoint
from delphi.inputs import check_output_dir, parse_hub_ref
from delphi.layout import (
    CONFIG_FILE,
    LOCK_FILE,
    RECIPE_FILE,
    REPLACED_COMMITTED,
    REPLACED_COMPLETE,
    REPLACED_DIR,
    WEIGHTS_FILE,
    latest_resumable,
    list_checkpoints,
    read_checkpoint_meta,
    run_entries,
)
from delphi.models import build_model
from delphi.quiet import tied_parameter_names
from delphi.recipe import Recipe, identity_changes
from delphi.recipe.problems import check_resume_path
from delphi.run_status import is_complete_run, lock_holder

log = logging.getLogger("delphi.train")


@dataclass(frozen=True)
class OutDirPlan:
    """What `train` will do with the out_dir: "fresh", "resume", "overwrite" or "complete"."""

    action: str
    resume_from: str | None = None
    final_checkpoint: str | None = None  # for "complete": the newest checkpoint folder


def plan_out_dir(recipe: Recipe, *, overwrite: bool) -> OutDirPlan:
    """Decide what to do with `recipe.out_dir` (main process); refuses a different run. Writes nothing,
    except moving back a run that an interrupted `--overwrite` had set aside."""
    out_dir = check_output_dir(recipe.out_dir, what="out_dir")
    if lock_holder(out_dir) is not None:
        raise DelphiError(
            f"out_dir {str(out_dir)!r} is being trained by another process (pid {lock_holder(out_dir)}); "
            "wait for it to finish, or choose another out_dir"
        )
    recover_set_aside_run(out_dir, keep=recipe_files(recipe))
    (out_dir / LOCK_FILE).unlink(missing_ok=True)  # left by a killed process (nobody holds it: checked above)
    existing = list_checkpoints(out_dir)
    if not existing:
        explicit = explicit_resume(recipe)
        return OutDirPlan("resume" if explicit else "fresh", explicit)
    replace = OutDirPlan("overwrite", explicit_resume(recipe)) if overwrite else None
    try:
        changes = saved_run_changes(out_dir, existing, recipe)
    except DelphiError:
        if replace:
            return replace
        raise
    if changes and replace:
        return replace
    if changes:
        raise DelphiError(
            f"out_dir {str(out_dir)!r} holds a different run ({len(changes)} difference(s): "
            + "; ".join(changes[:5])
            + "); choose another out_dir, or pass --overwrite to replace it"
        )
    newest_step, newest = existing[-1]
    if recipe.resume == "never":
        if replace:
            return replace
        raise DelphiError(
            f"out_dir {str(out_dir)!r} already holds checkpoints up to {newest.name} and resume is 'never'; "
            "use resume: auto to continue, or --overwrite to start over"
        )
    if is_complete_run(newest_step, read_checkpoint_meta(newest).get("max_steps")):
        return OutDirPlan("complete", final_checkpoint=str(newest))
    resumable = latest_resumable(out_dir)
    if resumable is not None:  # progress made here wins over an explicit `resume:` it started from
        return OutDirPlan("resume", str(resumable))
    explicit = explicit_resume(recipe)
    if explicit:
        return OutDirPlan("resume", explicit)
    if replace:
        return replace
    raise DelphiError(
        f"out_dir {str(out_dir)!r} holds checkpoints up to {newest.name}, but none keeps the optimizer "
        "state needed to continue (checkpoints.keep_optimizer: none); pass --overwrite to train from scratch"
    )


def recipe_files(recipe: Recipe) -> tuple[Path, ...]:
    """The files the recipe was read from: never a run's own files, even inside its out_dir."""
    return tuple(Path(source) for source in recipe.sources if not source.startswith("--set "))


def saved_run_changes(out_dir: Path, existing: list, recipe: Recipe) -> list[str]:
    """How `recipe` differs from the run saved in out_dir (`key: old -> new`); [] for the same run."""
    saved = out_dir / RECIPE_FILE
    if not saved.is_file():
        saved = existing[-1][1] / RECIPE_FILE
    if not saved.is_file():
        raise DelphiError(
            f"out_dir {str(out_dir)!r} holds checkpoints ({existing[-1][1].name}, ...) but no {RECIPE_FILE}: "
            "not a delphi run of this recipe; choose another out_dir or pass --overwrite"
        )
    try:
        before = Recipe.identity_of(yaml.safe_load(saved.read_text()))
    except (OSError, yaml.YAMLError, AttributeError, TypeError) as e:
        raise DelphiError(f"cannot read the saved recipe {str(saved)!r}: {e}") from e
    return identity_changes(before, recipe.identity())


def explicit_resume(recipe: Recipe) -> str | None:
    """The checkpoint a `resume:` path or hub branch names, checked (a hub branch is downloaded)."""
    if recipe.resume in ("auto", "never"):
        return None
    if parse_hub_ref(recipe.resume) is not None:
        checkpoint = download_checkpoint(recipe.resume, Path(recipe.out_dir))
    else:
        checkpoint = check_resume_path(recipe.resume)
    _check_same_model(recipe, Path(checkpoint))
    return str(checkpoint)


def _check_same_model(recipe: Recipe, checkpoint: Path) -> None:
    """A `resume:` checkpoint must hold weights of this recipe's model, name for name and shape for shape
    (its data, schedule and optimizer settings may differ: that is continuing training); else one line
    now, not a state-dict traceback in train(). Read from the safetensors header; the model is built on
    the meta device (shapes only)."""
    from safetensors import safe_open

    weights = checkpoint / WEIGHTS_FILE
    if not weights.is_file():
        return  # not a plain delphi step folder: the Trainer's own checks apply
    with safe_open(str(weights), framework="pt") as saved:
        have = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}

    model = build_model(recipe.model, device="meta")
    tied = tied_parameter_names(model)  # saved once, under the name they are tied to
    want = {
        name: tuple(t.shape) for name, t in model.state_dict().items() if name in have or name not in tied
    }
    common = sorted(set(have) & set(want))
    problems = [f"{name} {have[name]} -> {want[name]}" for name in common if have[name] != want[name]]
    problems += [f"{name} missing" for name in sorted(set(want) - set(have))]
    problems += [f"{name} not in this model" for name in sorted(set(have) - set(want))]
    if problems:
        try:
            architecture = json.loads((checkpoint / CONFIG_FILE).read_text())["architectures"][0]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            architecture = None
        saved_as = f"a {architecture}" if architecture else "another model"
        if architecture == recipe.model["architecture"]:
            saved_as += " of other sizes"
        raise DelphiError(
            f"resume {recipe.resume!r} holds {saved_as}, not this recipe's model "
            f"({recipe.model['architecture']}; {len(problems)} difference(s): "
            + "; ".join(problems[:3])
            + (" ..." if len(problems) > 3 else "")
            + "); resume from a checkpoint of this recipe's model"
        )


# ---- the set-aside run of --overwrite ----
#
# The aside folder records how far things got, so that whatever interrupts them (an exception, a
# signal, SIGKILL, a power cut), the next start finishes or undoes exactly the right thing:
#   no `.complete`           the old run was being set aside: move back what was moved, delete nothing
#   `.complete`              the new run was training: delete what it wrote, move the old run back
#   `.committed`             the new run has a checkpoint: delete the old run
# SIGINT and SIGTERM are held back while entries move, so only SIGKILL can stop a move half-way.

_COMPLETE, _COMMITTED = REPLACED_COMPLETE, REPLACED_COMMITTED


def _entries(out_dir: Path, keep: tuple[Path, ...]) -> list[Path]:
    """The run's entries in out_dir, never a file of `keep` (e.g. the recipe the user is training from)."""
    kept = {p.resolve() for p in keep}
    return [entry for entry in run_entries(out_dir) if entry.resolve() not in kept]


def set_aside_run(out_dir: Path, keep: tuple[Path, ...] = ()) -> list[str]:
    """Move the run's entries (step folders, recipe.yaml, ...) into `.delphi-replaced/`; returns their names."""
    aside = out_dir / REPLACED_DIR
    with _signals_held():
        aside.mkdir(exist_ok=True)
        moved = []
        for entry in _entries(out_dir, keep):
            os.replace(entry, aside / entry.name)
            moved.append(entry.name)
        (aside / _COMPLETE).touch()
    log.info(
        "--overwrite: the previous run (%d entries) is set aside until the first new checkpoint", len(moved)
    )
    return moved


def restore_set_aside_run(out_dir: Path, keep: tuple[Path, ...] = ()) -> None:
    """Put a set-aside run back in place of whatever the new run wrote (it had no checkpoint yet)."""
    aside = out_dir / REPLACED_DIR
    with _signals_held():
        if (aside / _COMPLETE).exists():
            for entry in _entries(out_dir, keep):
                _remove(entry)
            (aside / _COMPLETE).unlink()  # from here on, out_dir holds only entries of the old run
        for entry in sorted(aside.iterdir()):
            os.replace(entry, out_dir / entry.name)
        aside.rmdir()
    log.warning("the new run stopped before its first checkpoint: the previous run in %s is back", out_dir)


def drop_set_aside_run(out_dir: Path) -> None:
    """The new run has written its first checkpoint: the old run goes for good."""
    aside = out_dir / REPLACED_DIR
    if aside.exists():
        (aside / _COMMITTED).touch()
        shutil.rmtree(aside)
        log.info("the new run has a checkpoint: deleted the previous run it replaced")


def recover_set_aside_run(out_dir: Path, keep: tuple[Path, ...] = ()) -> None:
    """Finish what an interrupted `--overwrite` left (see the states above)."""
    aside = out_dir / REPLACED_DIR
    if not aside.is_dir():
        return
    if (aside / _COMMITTED).exists():
        shutil.rmtree(aside)
    else:
        restore_set_aside_run(out_dir, keep)


def remove_failed_start(out_dir: Path, keep: tuple[Path, ...] = ()) -> None:
    """Remove what a run that stopped before its first checkpoint wrote (never another run's files)."""
    if list_checkpoints(out_dir):
        return
    for entry in _entries(out_dir, keep):
        _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM back (main thread) until the block is done; they arrive right after it."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
