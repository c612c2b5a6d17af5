"""Run one suite run as its own process: `delphi train` (or `accelerate launch` over several devices),
with its thread count and devices in the environment, its output appended to `{out_dir}/train.log`,
and each attempt recorded in `{out_dir}/.delphi-attempt.json` so `--status` can say "failed".

Shared by both executors: this machine's process pool (delphi.suite.local) and SLURM jobs
(delphi.suite.slurm), so a run is launched the same way wherever it runs.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from delphi import atomic
from delphi.layout import RUN_LOG_FILE
from delphi.provenance import scrub_argv
from delphi.run_status import ATTEMPT_NAME, FAILED
from delphi.suite.plan import SuiteRun

LOG_NAME = RUN_LOG_FILE
INTERRUPTED = "interrupted"
OK = "ok"
# exit statuses of a run stopped by SIGINT/SIGTERM (delphi's own 130, a signal death, a shell's 128+N)
_STOPPED = {130, 143, -signal.SIGINT, -signal.SIGTERM}


def log_path(run: SuiteRun) -> Path:
    return Path(run.out_dir) / LOG_NAME


def free_port() -> int:
    """A TCP port nobody listens on now, for one multi-process run's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_command(run: SuiteRun, processes: int = 1) -> list[str]:
    """The run's command line: `python -m delphi train ...`, or through accelerate's torchrun path
    for several processes (one per device; on a CPU, gloo DDP as accelerate_configs/multi-cpu.yaml)."""
    if processes <= 1:
        return run.command()
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(free_port())]  # fmt: skip
    return [*launch, "-m", "delphi.train", *run.train_args()]


def run_env(threads: int | None, devices: list[int] | None) -> dict[str, str]:
    """The environment of a run: CPU threads (OMP/MKL) and, on GPUs, the devices it may see."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible_devices(devices))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def visible_devices(devices: list[int], environ: dict | None = None) -> list[str]:
    """The suite's device numbers (0..n-1 of what this process sees) as CUDA_VISIBLE_DEVICES entries.

    Inside a scheduler's allocation (CUDA_VISIBLE_DEVICES=2,3, or GPU UUIDs / MIG ids) device 0 is the
    first entry of that list, not physical GPU 0, which may belong to someone else.
    """
    environ = os.environ if environ is None else environ
    inherited = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return [inherited[i] if i < len(inherited) else str(i) for i in devices]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_attempt(out_dir: str | os.PathLike, record: dict) -> None:
    """Replace the attempt record atomically (a reader never sees half a file)."""
    atomic.write_json(Path(out_dir) / ATTEMPT_NAME, record)


def outcome_of(returncode: int, stopped: bool) -> str:
    if returncode == 0:
        return OK
    return INTERRUPTED if stopped or returncode in _STOPPED else FAILED


def launch(
    run: SuiteRun,
    *,
    threads: int | None,
    devices: list[int] | None = None,
    processes: int = 1,
    cwd: str | os.PathLike | None = None,
    executor: str = "local",
    on_start: Callable[[subprocess.Popen], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> tuple[int, str]:
    """Train `run` in a child process until it exits; returns (exit status, outcome: ok/failed/interrupted).

    The child starts a new session so a terminal's Ctrl-C reaches only the suite, which then stops
    every child itself (see delphi.suite.local.stop); `on_start` hands the process to the caller for that.
    """
    out_dir = Path(cwd or ".") / run.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    command = run_command(run, processes)
    where = f"devices {','.join(map(str, devices))}" if devices else "cpu"
    record = {
        "run": run.name,
        "command": scrub_argv(command),
        "executor": executor,
        "threads": threads,
        "devices": devices,
        "processes": processes,
        "started_at": _now(),
    }
    with open(out_dir / LOG_NAME, "ab") as log:
        header = f"\n==== delphi suite, {_now()}: {shlex.join(scrub_argv(command))} ({where}, {threads} thread(s))\n"
        log.write(header.encode())
        log.flush()
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=run_env(threads, devices),
            cwd=cwd,
            start_new_session=True,
        )
        write_attempt(out_dir, {**record, "pid": proc.pid})
        if on_start is not None:
            on_start(proc)
        try:
            returncode = proc.wait()
        except BaseException:  # the job itself is being stopped (submitit requeues a preempted job)
            log.write(b"==== stopped with its job; the next attempt resumes\n")
            write_attempt(out_dir, {**record, "pid": proc.pid, "ended_at": _now(), "outcome": INTERRUPTED})
            raise
        outcome = outcome_of(returncode, stopping())
        seconds = time.monotonic() - started
        log.write(f"==== exit status {returncode} ({outcome}) after {seconds:.1f} s\n".encode())
    write_attempt(
        out_dir, {**record, "pid": proc.pid, "ended_at": _now(), "returncode": returncode, "outcome": outcome}
    )
    return returncode, outcome


def log_tail(run: SuiteRun, lines: int = 20, cwd: str | os.PathLike | None = None) -> str:
    """The last `lines` lines of the run's log (its newest attempt's error is there)."""
    path = Path(cwd or ".") / log_path(run)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def has_exited(proc: subprocess.Popen) -> bool:
    """True once `proc` has ended; never reaps it, so it is safe in a signal handler that interrupted
    a `proc.wait()` (whose lock would make a second `wait` spin) and from any thread."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


def stop_process_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGINT to the child's whole process group (accelerate's workers too), then SIGTERM, then SIGKILL.

    delphi train turns SIGINT into a clean exit; its checkpoints are written atomically either way.
    """
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if has_exited(proc):
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while not has_exited(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
