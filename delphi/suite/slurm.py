"""Run a suite on a SLURM cluster through `submitit`: each run is one job (a job array), trained by
the same launcher as on one machine (delphi.suite.launch), in the directory the suite was started from.

`executor="submitit-local"` uses submitit's LocalExecutor instead: real job processes on this machine,
the same pickled job and code path, so the SLURM path is tested without a cluster.

A job that SLURM preempts or times out is requeued by submitit (the job object is checkpointable):
its `delphi train` resumes from the newest checkpoint, as a rerun always does.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError
from delphi.run_status import run_status
from delphi.suite.launch import launch, stop_process_group
from delphi.suite.local import cpu_cores
from delphi.suite.plan import SuiteRun

EXTRA = "slurm"  # the pyproject extra that brings submitit


def _submitit():
    try:
        import submitit
    except ImportError as e:
        raise DelphiError(
            f"--executor slurm needs submitit, which is not installed; pip install 'delphi[{EXTRA}]' "
            "(or pip install submitit)"
        ) from e
    return submitit


class SuiteJob:
    """One run as a submitit job: picklable, and checkpointable (requeued on timeout or preemption)."""

    def __init__(self, run: SuiteRun, cwd: str, cpus: int | None, gpus: int, executor: str = "slurm"):
        self.run, self.cwd, self.cpus, self.gpus, self.executor = run, cwd, cpus, gpus, executor
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _proc=None)

    def __call__(self) -> tuple[int, str]:
        # a handled SIGINT is reset by exec: the child turns the SIGINT that stops it into a clean exit,
        # even where this job inherited SIGINT as ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        out_dir = Path(self.cwd) / self.run.out_dir
        if run_status(out_dir, max_steps=self.run.max_steps).done:  # finished by an earlier attempt
            return 0, "ok"
        processes = max(1, self.gpus)  # one per GPU; a CPU-only job trains in one process
        threads = max(1, (self.cpus or cpu_cores()) // processes)

        def keep(proc: subprocess.Popen) -> None:
            self._proc = proc

        return launch(
            self.run,
            threads=threads,
            processes=processes,
            cwd=self.cwd,
            executor=self.executor,
            on_start=keep,
        )

    def checkpoint(self):
        """submitit calls this on preemption/timeout: stop the child (its checkpoints are atomic) and
        requeue the same job; `delphi train` resumes from the newest checkpoint."""
        import submitit

        if self._proc is not None:  # (runs in a signal handler: stop_process_group never blocks on wait)
            stop_process_group(self._proc, grace=20.0)
        return submitit.helpers.DelayedSubmission(
            SuiteJob(self.run, self.cwd, self.cpus, self.gpus, self.executor)
        )


def make_executor(
    executor: str,
    *,
    folder: str | os.PathLike,
    partition: str | None,
    gpus_per_job: int,
    cpus_per_job: int | None,
    time_min: int,
    parallelism: int | None,
    slurm_args: list[str] | tuple[str, ...] = (),
):
    """A submitit executor for `slurm` or `submitit-local`, with the suite's resources per job."""
    submitit = _submitit()
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        params: dict[str, Any] = {
            "timeout_min": time_min,
            "gpus_per_node": gpus_per_job,
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if partition:
            params["slurm_partition"] = partition
        if cpus_per_job:
            params["cpus_per_task"] = cpus_per_job
        if parallelism:
            params["slurm_array_parallelism"] = parallelism
        for item in slurm_args:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise DelphiError(
                    f"--slurm {item!r} must look like KEY=VALUE, e.g. --slurm account=myproject"
                )
            params[f"slurm_{key}"] = value
    elif executor == "submitit-local":
        ex = submitit.AutoExecutor(folder=str(folder), cluster="local")
        params = {"timeout_min": time_min, "gpus_per_node": gpus_per_job}
    else:
        raise DelphiError(f"--executor {executor!r} is not local, slurm or submitit-local")
    try:
        ex.update_parameters(**params)
    except (ValueError, TypeError) as e:
        raise DelphiError(f"submitit rejected the SLURM parameters {sorted(params)}: {e}") from e
    return ex


def run_submitit(
    runs: list[SuiteRun],
    executor,
    *,
    cpus_per_job: int | None,
    gpus_per_job: int,
    report,
) -> dict[str, tuple[int | None, str]]:
    """Submit one job per run (as one job array), wait for them; {run name: (exit status, outcome)}.

    Ctrl-C stops the waiting, not the jobs: they keep running on the cluster (`--status` follows
    them; `scancel` stops them), and a rerun of the suite skips what they finished.
    """
    cwd = os.getcwd()
    name = "slurm" if executor.cluster == "slurm" else "submitit-local"
    jobs_to_run = [SuiteJob(run, cwd, cpus_per_job, gpus_per_job, name) for run in runs]
    with executor.batch():
        jobs = [executor.submit(job) for job in jobs_to_run]
    for run, job in zip(runs, jobs, strict=True):
        report(run, "submitted", {"job_id": job.job_id})
    results: dict[str, tuple[int | None, str]] = {}
    try:
        for run, job in zip(runs, jobs, strict=True):
            try:
                rc, outcome = job.result()
            except Exception as e:  # the job died outside delphi train (node failure, time limit, ...)
                rc, outcome = None, "failed"
                report(run, "job-error", {"job_id": job.job_id, "error": str(e).strip().splitlines()[-1:]})
            results[run.name] = (rc, outcome)
            report(run, outcome, {"returncode": rc, "job_id": job.job_id})
    except KeyboardInterrupt:
        ids = " ".join(str(job.job_id) for job in jobs)
        print(f"stopped waiting; the jobs keep running (cancel them with: scancel {ids})", flush=True)
        raise
    return results
