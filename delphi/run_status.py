"""What state a run directory is in, read from its files alone, and the lock that marks a run in progress.

The one home of "is this run complete?": `delphi suite` (to skip a run, and for `--status`) and
`delphi train` (a rerun of a complete run) both ask `run_status`. Only files are read, so it answers
for a run trained by another process, on another machine sharing the filesystem, or long ago, and
it is safe to call while the run writes (checkpoint folders appear atomically).

- complete checkpoints: `{out_dir}/step{N}/` holding `checkpoint.json` (step, max_steps, eval_loss, ...)
- throughput: the newest `tokens_per_second` (and `mfu`, where logged) in that folder's
  `trainer_state.json` log history
- running: another process holds the exclusive lock on `{out_dir}/.delphi.lock` (`hold_run_lock`)
- failed: the last attempt a launcher recorded in `{out_dir}/.delphi-attempt.json` ended in an error
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from delphi.errors import DelphiError
from delphi.layout import ATTEMPT_FILE as ATTEMPT_NAME
from delphi.layout import LOCK_FILE as LOCK_NAME
from delphi.layout import has_resume_state, list_checkpoints, read_checkpoint_meta

DONE = "done"
RUNNING = "running"
RESUMABLE = "resumable"
FAILED = "failed"
PENDING = "pending"
STATES = (DONE, RUNNING, RESUMABLE, FAILED, PENDING)


@dataclass(frozen=True)
class RunStatus:
    """One run directory, as its files describe it. `state` is one of STATES."""

    out_dir: str
    state: str
    step: int = 0  # newest complete checkpoint's step (0: none)
    max_steps: int | None = None  # from that checkpoint, or the caller's expected value
    eval_loss: float | None = None  # newest checkpoint that recorded one
    tokens_per_second: float | None = None
    mfu: float | None = None
    checkpoints: list[int] = field(default_factory=list)
    resumable_from: str | None = None  # the step folder `resume: auto` would continue from
    holder_pid: int | None = None  # the training process, when running
    attempt: dict | None = None  # the last launcher attempt record, if any
    run_context: dict | None = None  # newest checkpoint's run_context.json (parameters, threads, ...)

    @property
    def done(self) -> bool:
        return self.state == DONE


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def last_logged(log_history: list[dict], key: str) -> float | None:
    """The newest value of `key` in a Trainer log history, or None."""
    for entry in reversed(log_history):
        if isinstance(entry, dict) and entry.get(key) is not None:
            return entry[key]
    return None


def is_complete_run(step: int, max_steps: int | None) -> bool:
    """The predicate: a run is complete once its newest complete checkpoint reaches max_steps."""
    return max_steps is not None and max_steps > 0 and step >= max_steps


def run_status(out_dir: str | os.PathLike, *, max_steps: int | None = None) -> RunStatus:
    """The state of the run in `out_dir`: done / running / failed / resumable / pending, with its numbers.

    `max_steps`: the number of steps this run is meant to reach, when the caller knows it (e.g. a
    recipe's `training.max_steps`, or the total `delphi train` computed); by default the newest
    checkpoint's own `max_steps`. Passing it matters when a run is asked to go further than it was.
    """
    out = Path(out_dir)
    found = list_checkpoints(out)
    steps = [step for step, _ in found]
    step, meta, eval_loss, tps, mfu, context = 0, {}, None, None, None, None
    if found:
        step, newest = found[-1]
        meta = _read_json(newest / "checkpoint.json") or {}
        context = _read_json(newest / "run_context.json")
        history = (_read_json(newest / "trainer_state.json") or {}).get("log_history") or []
        tps, mfu = last_logged(history, "tokens_per_second"), last_logged(history, "mfu")
        for _, folder in reversed(found):
            loss = (_read_json(folder / "checkpoint.json") or {}).get("eval_loss")
            if loss is not None:
                eval_loss = loss
                break
    target = max_steps if max_steps is not None and max_steps > 0 else meta.get("max_steps")
    resumable = next((str(f) for _, f in reversed(found) if has_resume_state(f)), None)
    holder = lock_holder(out)
    attempt = _read_json(out / ATTEMPT_NAME)
    if holder is not None:
        state = RUNNING
    elif is_complete_run(step, target):
        state = DONE
    elif attempt is not None and attempt.get("outcome") == FAILED:
        state = FAILED
    elif resumable is not None:
        state = RESUMABLE
    else:
        state = PENDING
    return RunStatus(
        out_dir=str(out_dir),
        state=state,
        step=step,
        max_steps=target,
        eval_loss=eval_loss,
        tokens_per_second=tps,
        mfu=mfu,
        checkpoints=steps,
        resumable_from=resumable,
        holder_pid=holder if holder and holder > 0 else None,
        attempt=attempt,
        run_context=context,
    )


def is_done(out_dir: str | os.PathLike, *, max_steps: int | None = None) -> bool:
    """True if the run in `out_dir` has a complete checkpoint at (or past) its last step."""
    found = list_checkpoints(out_dir)
    if not found:
        return False
    step, newest = found[-1]
    target = (
        max_steps
        if max_steps is not None and max_steps > 0
        else read_checkpoint_meta(newest).get("max_steps")
    )
    return is_complete_run(step, target)


# ---- the run lock: one training process per out_dir, visible to other processes ----


def lock_holder(out_dir: str | os.PathLike) -> int | None:
    """The pid of the process training `out_dir` (-1 if it did not write it yet), or None if none is.

    Probes the lock without creating anything: a read-only open and a *shared* non-blocking flock,
    which conflicts with the trainer's exclusive lock and, unlike an exclusive one, needs no write
    access (on NFS, flock is a POSIX lock, and an exclusive one needs a file opened for writing).
    A file system that cannot lock at all answers None (nothing can be known to hold it).
    """
    path = Path(out_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(path.read_text().strip() or "-1")
            except (OSError, ValueError):
                return -1
        except OSError:  # ENOLCK / ENOSYS: no flock on this file system
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def is_running(out_dir: str | os.PathLike) -> bool:
    """True while some process holds `out_dir`'s run lock (is training it)."""
    return lock_holder(out_dir) is not None


@contextlib.contextmanager
def hold_run_lock(out_dir: str | os.PathLike, *, wait: float = 2.0) -> Iterator[Path]:
    """Hold the exclusive lock on `{out_dir}/.delphi.lock` (creating out_dir) for the block.

    A second trainer of the same out_dir is refused with a DelphiError naming the holder. `wait`
    seconds of retries cover a status probe that holds the lock for an instant. The lock goes with
    the process (the kernel drops it on exit, even on SIGKILL), so a crash never leaves a held lock;
    the file a killed process leaves is removed by the next `delphi train` of that out_dir.
    """
    out = Path(out_dir)
    path = out / LOCK_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DelphiError(f"cannot write to out_dir {str(out)!r}: {e.strerror or e}") from e
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = lock_holder(out)
                    pid = f"pid {holder}" if holder and holder > 0 else "pid unknown"
                    raise DelphiError(
                        f"out_dir {str(out)!r} is being trained by another process ({pid})"
                    ) from None
                time.sleep(0.05)
            except OSError as e:
                raise DelphiError(
                    f"cannot lock {str(path)!r} ({e.strerror or e}): delphi needs a file system with working "
                    "flock for out_dir (local disks, NFSv4; Lustre mounted with flock)"
                ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        held = True
        yield path
    finally:
        if "held" in locals():
            path.unlink(missing_ok=True)  # still ours: a finished run leaves no lock file behind
        os.close(fd)  # releases the lock
