"""Run a suite on this machine: up to `jobs` runs at once, each in its own process, on its own devices.

Scheduling is `concurrent.futures.ThreadPoolExecutor` (one thread per concurrent run, each waiting on
its child process) plus a queue of device slots: on GPUs each slot is `devices_per_run` GPUs and every
GPU appears `runs_per_device` times; on the CPU the cores are divided between the concurrent runs
(threads per process = cores // (concurrent runs x processes per run), at least 1).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from delphi.errors import DelphiError
from delphi.run_status import FAILED
from delphi.suite.launch import launch, stop_process_group
from delphi.suite.plan import SuiteRun


@dataclass(frozen=True)
class Layout:
    """Where runs go: `slots` (each a list of GPU ids, or None for the CPU), threads per process."""

    slots: list[list[int] | None]
    threads: int | None
    processes: int  # per run
    description: str


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def visible_gpus() -> int:
    """How many GPUs this process sees (within CUDA_VISIBLE_DEVICES, if set); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_devices(devices: str, visible: int | None = None) -> list[int] | None:
    """'auto' -> every visible GPU (None when there is none); 'cpu' -> None; '0,1,3' -> [0, 1, 3].

    GPU ids count the GPUs this process sees (`visible`, default: ask torch), so an id that names no
    visible GPU is refused rather than trained on the CPU.
    """
    value = devices.strip().lower()
    if value == "cpu":
        return None
    if value == "auto":
        count = visible_gpus() if visible is None else visible
        return list(range(count)) or None
    try:
        ids = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        ids = []
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise DelphiError(f"--devices {devices!r} is not auto, cpu or a list of GPU ids like 0,1,2,3")
    count = visible_gpus() if visible is None else visible
    missing = [i for i in ids if i >= count]
    if missing:
        raise DelphiError(f"--devices {devices!r} names GPU {missing[0]}, but {_gpus_seen(count)}")
    return ids


def _gpus_seen(count: int) -> str:
    """Why a GPU id is refused: 'no GPU is visible here ...' or 'this process sees 2 GPU(s) ...'."""
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    within = ""
    if inherited is not None:
        within = (
            f" (numbered within CUDA_VISIBLE_DEVICES={inherited})"
            if inherited.strip()
            else " (CUDA_VISIBLE_DEVICES is empty)"
        )
    if count == 0:
        return f"no GPU is visible here{within}; expected --devices cpu or auto"
    return f"this process sees {count} GPU(s){within}; expected ids 0 to {count - 1}, auto or cpu"


def check_layout(
    *, jobs: int | None, devices: str, runs_per_device: int, devices_per_run: int, visible: int | None = None
) -> list[int] | None:
    """Check the suite's layout flags (before anything is planned or printed); the GPUs they give
    (None: the CPU)."""
    if jobs is not None and jobs < 1:
        raise DelphiError(f"--jobs {jobs} must be at least 1")
    if runs_per_device < 1:
        raise DelphiError(f"--runs-per-device {runs_per_device} must be at least 1")
    if devices_per_run < 1:
        raise DelphiError(f"--devices-per-run {devices_per_run} must be at least 1")
    gpus = parse_devices(devices, visible)
    if gpus is None:
        return None
    if devices_per_run > 1 and runs_per_device > 1:
        raise DelphiError(
            "--runs-per-device packs small runs on one GPU; it cannot go with --devices-per-run > 1"
        )
    if len(gpus) % devices_per_run:
        raise DelphiError(
            f"--devices-per-run {devices_per_run} does not divide the {len(gpus)} GPU(s) {gpus}; "
            "choose GPUs that split into whole groups"
        )
    return gpus


def plan_layout(
    n_runs: int,
    *,
    jobs: int | None,
    devices: str,
    runs_per_device: int,
    devices_per_run: int,
    visible: int | None = None,
) -> Layout:
    """How `n_runs` runs share this machine: device slots, concurrency and CPU threads."""
    gpus = check_layout(
        jobs=jobs,
        devices=devices,
        runs_per_device=runs_per_device,
        devices_per_run=devices_per_run,
        visible=visible,
    )
    if gpus is None:
        concurrent = max(1, min(jobs or 1, n_runs))
        threads = max(1, cpu_cores() // (concurrent * devices_per_run))
        processes = f", {devices_per_run} processes each" if devices_per_run > 1 else ""
        return Layout(
            [None] * concurrent,
            threads,
            devices_per_run,
            f"cpu: {concurrent} run(s) at once{processes}, {threads} thread(s) per process",
        )
    groups = [gpus[i : i + devices_per_run] for i in range(0, len(gpus), devices_per_run)]
    slots = [group for _ in range(runs_per_device) for group in groups]
    concurrent = max(1, min(jobs or len(slots), len(slots), n_runs))
    # threads: the cores shared by every process that runs at once
    threads = max(1, cpu_cores() // (concurrent * devices_per_run))
    return Layout(
        slots[:concurrent],
        threads,
        devices_per_run,
        f"GPUs {','.join(map(str, gpus))}: {concurrent} run(s) at once, "
        f"{devices_per_run} GPU(s) per run, up to {runs_per_device} run(s) per GPU",
    )


def run_local(
    runs: list[SuiteRun],
    layout: Layout,
    *,
    report: Callable[[SuiteRun, str, dict], None],
    grace: float = 30.0,
) -> dict[str, tuple[int | None, str]]:
    """Train `runs` under `layout`; {run name: (exit status, outcome)}. Runs never started are absent.

    Ctrl-C (or SIGTERM to the suite) stops every child cleanly (SIGINT to its process group, then
    SIGTERM and SIGKILL after `grace` seconds) and raises KeyboardInterrupt once all have exited.
    """
    slots: queue.Queue = queue.Queue()
    for slot in layout.slots:
        slots.put(slot)
    stop = threading.Event()
    live: dict[str, subprocess.Popen] = {}
    lock = threading.Lock()
    results: dict[str, tuple[int | None, str]] = {}

    def work(run: SuiteRun) -> None:
        slot = slots.get()
        try:
            if stop.is_set():
                return

            def started(proc: subprocess.Popen) -> None:
                with lock:
                    live[run.name] = proc
                report(run, "started", {"slot": slot, "pid": proc.pid})
                if stop.is_set():  # Ctrl-C came while this one was starting
                    stop_process_group(proc, grace)

            begin = time.monotonic()
            try:
                rc, outcome = launch(
                    run,
                    threads=layout.threads,
                    devices=slot,
                    processes=layout.processes,
                    on_start=started,
                    stopping=stop.is_set,
                )
            except OSError as e:  # could not even start (out_dir not writable, ...): this run failed
                with lock:
                    results[run.name] = (None, FAILED)
                report(run, "start-error", {"error": str(e)})
                return
            with lock:
                live.pop(run.name, None)
                results[run.name] = (rc, outcome)
            report(run, outcome, {"returncode": rc, "seconds": time.monotonic() - begin})
        finally:
            slots.put(slot)

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        # SIGTERM (a scheduler, `kill`) stops the suite like Ctrl-C; SIGINT is handled even where it was
        # inherited as ignored (a background job), and since a handled signal is reset by exec, every
        # child's delphi train turns the SIGINT it gets into a clean exit.
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGTERM, _raise_interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    pool = ThreadPoolExecutor(max_workers=len(layout.slots), thread_name_prefix="delphi-suite")
    try:
        pending = {pool.submit(work, run) for run in runs}
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # a bug in the launcher itself, not a failed run: let it surface
    except KeyboardInterrupt:
        stop.set()
        _stop_all(live, lock, grace)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if in_main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return results


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop_all(live: dict[str, subprocess.Popen], lock: threading.Lock, grace: float) -> None:
    with lock:
        procs = list(live.values())
    if procs:
        print(
            f"stopping {len(procs)} run(s); each ends its current step or save (up to {grace:.0f} s)",
            flush=True,
        )
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:  # a second Ctrl-C must not orphan them
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    threads = [threading.Thread(target=stop_process_group, args=(p, grace)) for p in procs]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
