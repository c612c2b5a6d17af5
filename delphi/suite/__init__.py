"""`delphi suite`: train every run of a suite (recipes x seeds) to completion, unattended.

Each run is an ordinary `delphi train` process with its own out_dir and log (`{out_dir}/train.log`),
so everything that holds for one run (exact resume, data order, hub branches) holds inside a suite;
the suite adds scheduling, idempotence and status. Rerunning the same command finishes a suite: a
complete run is skipped without starting a process, a partial one resumes, a failed one is retried.

- delphi.suite.plan: recipes x seeds -> runs (names, out_dirs, seed overrides)
- delphi.suite.launch: one run as a child process (env, log, attempt record)
- delphi.suite.local: this machine (a process pool over device slots / CPU cores)
- delphi.suite.slurm: SLURM through submitit (and submitit's local executor)
- delphi.suite.status: the `--status` table
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from delphi.errors import DelphiError
from delphi.run_status import RUNNING, run_status
from delphi.suite.check import check_runs
from delphi.suite.launch import OK, log_path, log_tail
from delphi.suite.local import check_layout, cpu_cores, plan_layout, run_local
from delphi.suite.plan import SuiteRun, plan_suite
from delphi.suite.slurm import make_executor, run_submitit
from delphi.suite.status import format_status, status_rows

__all__ = ["SuiteResult", "SuiteRun", "format_failures", "plan_suite", "run_suite", "suite_status"]

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass
class SuiteResult:
    """What one `delphi suite` invocation did, by run name."""

    runs: list[SuiteRun]
    skipped: list[str] = field(default_factory=list)  # complete before this invocation: no process started
    trained: list[str] = field(default_factory=list)  # trained to completion now
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # being trained by another process: left alone

    @property
    def ok(self) -> bool:
        return not self.failed and not self.busy


def suite_status(paths, *, only=(), seeds=None, overrides=()) -> str:
    """The `--status` table of the suite (same arguments as the suite itself)."""
    return format_status(status_rows(plan_suite(paths, only=only, seeds=seeds, overrides=overrides)))


def run_suite(
    paths: list[str | Path],
    *,
    only: list[str] | tuple[str, ...] = (),
    seeds: list[int] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    jobs: int | None = None,
    devices: str = "auto",
    runs_per_device: int = 1,
    devices_per_run: int = 1,
    executor: str = "local",
    partition: str | None = None,
    gpus_per_job: int = 1,
    cpus_per_job: int | None = None,
    time_min: int = 24 * 60,
    slurm_args: list[str] | tuple[str, ...] = (),
    submitit_dir: str | Path = "out/submitit",
    echo: Callable[[str], None] = print,
) -> SuiteResult:
    """Train every run of the suite that is not complete yet; never raises for a failed run.

    Bad input (bad flags or devices, a broken recipe, two runs sharing an out_dir, a run to train whose
    inputs are missing or whose optimizer values are out of range: delphi.suite.check) raises
    DelphiError before anything starts, the flags before anything is read. Ctrl-C stops the children
    cleanly and raises KeyboardInterrupt.
    """
    if executor not in EXECUTORS:
        raise DelphiError(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if jobs is not None and jobs < 1:
        raise DelphiError(f"--jobs {jobs} must be at least 1")
    if executor == "local":  # the flags first, whatever is left to train
        check_layout(
            jobs=jobs, devices=devices, runs_per_device=runs_per_device, devices_per_run=devices_per_run
        )
    runs = plan_suite(paths, only=only, seeds=seeds, overrides=overrides)
    result = SuiteResult(runs)
    todo: list[SuiteRun] = []
    resuming: list[bool] = []
    for run in runs:
        status = run_status(run.out_dir, max_steps=run.max_steps)
        if status.done:
            result.skipped.append(run.name)
        elif status.state == RUNNING:
            result.busy.append(run.name)
            pid = f"pid {status.holder_pid}" if status.holder_pid else "pid unknown"
            echo(f"{run.name}: being trained by another process ({pid}); left alone")
        else:
            todo.append(run)
            resuming.append(status.resumable_from is not None)
    processes = devices_per_run if executor == "local" else max(1, gpus_per_job)
    check_runs(list(zip(todo, resuming, strict=True)), processes=processes)
    resumes = sum(resuming)
    echo(
        f"suite: {len(runs)} run(s): {len(result.skipped)} complete (skipped), {len(todo)} to train"
        + (f" ({resumes} resume from a checkpoint)" if resumes else "")
        + (f", {len(result.busy)} busy elsewhere" if result.busy else "")
    )
    if not todo:
        return result

    lock = threading.Lock()
    order = {run.name: i + 1 for i, run in enumerate(todo)}

    def report(run: SuiteRun, event: str, info: dict) -> None:
        tag = f"[{order[run.name]:>{len(str(len(todo)))}}/{len(todo)}] {run.name}"
        if event == "started":
            where = f"GPU {','.join(map(str, info['slot']))}" if info.get("slot") else "cpu"
            line = f"{tag}: started ({where}, pid {info['pid']}), log {log_path(run)}"
        elif event == "submitted":
            line = f"{tag}: submitted as job {info['job_id']}, log {log_path(run)}"
        elif event == "start-error":
            line = f"{tag}: FAILED to start: {info['error']}"
        elif event == "job-error":
            line = f"{tag}: job {info['job_id']} ended without a result: {' '.join(info['error'])}"
        elif event == OK:
            status = run_status(run.out_dir, max_steps=run.max_steps)
            loss = f", val loss {status.eval_loss:.4f}" if status.eval_loss is not None else ""
            took = f" in {info['seconds']:.1f} s" if "seconds" in info else ""
            line = f"{tag}: done{took} (step {status.step}/{status.max_steps}{loss})"
        else:
            line = f"{tag}: {event.upper()} (exit status {info.get('returncode')}), log {log_path(run)}"
        with lock:
            echo(line)

    if executor == "local":
        layout = plan_layout(
            len(todo),
            jobs=jobs,
            devices=devices,
            runs_per_device=runs_per_device,
            devices_per_run=devices_per_run,
        )
        echo(f"suite: {layout.description}")
        outcomes = run_local(todo, layout, report=report)
    else:
        ex = make_executor(
            executor,
            folder=Path(submitit_dir) / "%j",
            partition=partition,
            gpus_per_job=gpus_per_job,
            cpus_per_job=cpus_per_job,
            time_min=time_min,
            parallelism=jobs,
            slurm_args=slurm_args,
        )
        if executor == "submitit-local" and cpus_per_job is None:  # its jobs all start at once, here
            cpus_per_job = max(1, cpu_cores() // min(jobs or len(todo), len(todo)))
        echo(f"suite: {len(todo)} job(s) to {executor} (logs of the jobs themselves in {submitit_dir})")
        outcomes = run_submitit(todo, ex, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job, report=report)

    for run in todo:
        rc, outcome = outcomes.get(run.name, (None, "not started"))
        if outcome == OK and run_status(run.out_dir, max_steps=run.max_steps).done:
            result.trained.append(run.name)
        else:
            result.failed.append(run.name)
    return result


def format_failures(result: SuiteResult, lines: int = 20) -> str:
    """Each failed run with the tail of its log, for the end of the suite's output."""
    by_name = {run.name: run for run in result.runs}
    parts = []
    for name in result.failed:
        run = by_name[name]
        parts.append(f"---- {name} failed; last lines of {log_path(run)}:\n{log_tail(run, lines)}")
    return "\n".join(parts)
