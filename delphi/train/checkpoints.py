"""Turning the checkpoint transformers' Trainer writes into delphi's `step{N}` folder, atomically.

Trainer writes `checkpoint-{N}/` itself (model, tokenizer, optimizer, scheduler, scaler, RNG, trainer and
callback state). Then the main process adds the run's own files, writes `checkpoint.json` last, flushes
everything to disk and renames the folder to `step{N}` in one step; only after that is older resume
state dropped (`keep_optimizer: latest`). A process killed at any moment leaves either a complete
`step{N}` or an unfinished `checkpoint-{N}` that the next start deletes. The names are in `delphi.layout`.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from delphi import atomic
from delphi.errors import DelphiError
from delphi.layout import (
    META_NAME,
    WEIGHTS_FILE,
    checkpoint_dir,
    is_complete,
    is_resume_state,
    list_checkpoints,
    unfinished_saves,
)
from delphi.portable import make_portable

logger = logging.getLogger(__name__)

FSDP_WEIGHTS = "pytorch_model_fsdp.bin"  # accelerate's FSDP copy of the weights (delphi.train.resume)


def finalize_checkpoint(
    trainer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    step: int,
    *,
    run_files: dict[str, str],
    meta: dict,
    keep_optimizer: str = "latest",
) -> Path:
    """Make Trainer's config and tokenizer files portable, add `run_files` and `checkpoint.json`, rename the
    folder to `step{N}`, apply keep_optimizer."""
    trainer_dir = Path(trainer_dir)
    if (trainer_dir / WEIGHTS_FILE).is_file():
        (trainer_dir / FSDP_WEIGHTS).unlink(
            missing_ok=True
        )  # FSDP's second copy: a step holds its weights once
    make_portable(trainer_dir)  # the config and tokenizer files transformers 4 loads too (delphi.portable)
    for name, text in run_files.items():
        atomic.write_text(trainer_dir / name, text)
    if keep_optimizer == "none":
        drop_resume_state(trainer_dir)
    atomic.write_json(trainer_dir / META_NAME, meta)
    final = atomic.replace_dir(trainer_dir, checkpoint_dir(out_dir, step))
    if keep_optimizer == "latest":
        for other_step, folder in list_checkpoints(out_dir):
            if other_step != step:
                drop_resume_state(folder)
    return final


def drop_resume_state(folder: str | os.PathLike) -> list[str]:
    """Delete optimizer/scheduler/scaler/RNG state from a checkpoint folder (never the model); returns names."""
    removed = []
    for entry in Path(folder).iterdir():
        if entry.is_file() and is_resume_state(entry.name):
            entry.unlink()
            removed.append(entry.name)
    return sorted(removed)


def remove_unfinished_saves(out_dir: str | os.PathLike) -> list[Path]:
    """Delete what a killed process left half-written; returns what was removed.

    One exception: a complete `.stepN.old` whose `stepN` is missing is a checkpoint caught between the
    two renames of `atomic.replace_dir`; it is put back, not deleted.
    """
    stale = []
    for folder in unfinished_saves(out_dir):
        original = folder.with_name(folder.name[1:].removesuffix(".old"))
        if folder.name.endswith(".old") and is_complete(folder) and not original.exists():
            os.replace(folder, original)
            logger.info("restored checkpoint %s (a replacement was interrupted)", original)
            continue
        logger.info("removing unfinished checkpoint %s", folder)
        shutil.rmtree(folder, ignore_errors=True)
        stale.append(folder)
    return stale


_WRITE_FAILURES = ("No space left on device", "file write failed", "unexpected pos", "iostream error")


def is_disk_full(error: BaseException, out_dir: str | os.PathLike) -> bool:
    """True when `error` is a write that failed because the disk of `out_dir` is full (or over quota).

    Some writers say so (ENOSPC); torch.save only says that a write failed, so a write failure counts
    when the disk has less room left than one more checkpoint needs.
    """
    messages = []
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    if not any(pattern in text for text in messages for pattern in _WRITE_FAILURES):
        return False
    if any("No space left on device" in text for text in messages):
        return True
    saved = list_checkpoints(out_dir)
    needed = sum(f.stat().st_size for f in saved[-1][1].rglob("*") if f.is_file()) if saved else 1 << 20
    try:
        return shutil.disk_usage(out_dir).free < needed
    except OSError:
        return False


def disk_full_error(out_dir: str | os.PathLike, step: int | None) -> DelphiError:
    """The one message a run stops with when a checkpoint cannot be written for lack of space."""
    out_dir = Path(out_dir)
    try:
        free = shutil.disk_usage(out_dir).free
        free_text = f"{free / 2**20:.1f} MiB free"
    except OSError:
        free_text = "free space unknown"
    saved = list_checkpoints(out_dir)
    what = f"checkpoint step{step}" if step is not None else "a checkpoint"
    kept = (
        f"earlier checkpoints are intact (newest: {saved[-1][1].name})" if saved else "no checkpoint was kept"
    )
    return DelphiError(
        f"the disk of out_dir {str(out_dir)!r} is full ({free_text}): {what} could not be written and was "
        f"removed; {kept}. Free some space and run the same command again to resume."
    )


def remove_partial_checkpoint(out_dir: str | os.PathLike, step: int | None) -> None:
    """After a failed save: delete the unfinished folder of `step` (never a complete checkpoint)."""
    for folder in unfinished_saves(out_dir):
        if step is None or folder.name.endswith(f"-{step}") or f".step{step}." in folder.name:
            shutil.rmtree(folder, ignore_errors=True)
    if (
        step is not None
        and checkpoint_dir(out_dir, step).exists()
        and not is_complete(checkpoint_dir(out_dir, step))
    ):
        shutil.rmtree(checkpoint_dir(out_dir, step), ignore_errors=True)
