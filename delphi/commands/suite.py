"""`delphi suite`: train every run of a suite (recipes x seeds) to completion."""

from __future__ import annotations

import argparse
import sys

from delphi.errors import DelphiError

HELP = "train every run of a suite (recipes x seeds) to completion; rerun to finish; --status"
DESCRIPTION = (
    "Train every recipe under PATH (x --seeds), each as its own `delphi train` process with its log in its "
    "out_dir, up to --jobs at once. Complete runs are skipped, partial ones resume, a failed one does not "
    "stop the others; rerunning the same command finishes the suite."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="recipe files or folders (base*.yaml skipped)")
    p.add_argument(
        "--only", action="append", default=[], metavar="PATTERN",
        help="train only recipes whose name matches this shell pattern, e.g. 'llama2-*' (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--seeds", nargs="+", type=int, metavar="K",
        help="seeds k of every recipe: seeds.init+k, seeds.data+k, name and out_dir suffixed -seed{k} "
        "(default: each recipe once, as written)",
    )  # fmt: skip
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a field of every recipe, as in `delphi train --set` (repeatable)",
    )  # fmt: skip
    p.add_argument("--status", action="store_true", help="print one row per run and its state; train nothing")
    p.add_argument(
        "--jobs", "-j", type=int,
        help="runs at once (default: one per GPU slot, 1 on the CPU); with slurm: the job array's parallelism",
    )  # fmt: skip
    p.add_argument(
        "--devices", default="auto",
        help="auto (every visible GPU, else the CPU), cpu, or GPU ids like 0,1,2,3",
    )  # fmt: skip
    p.add_argument(
        "--runs-per-device",
        type=int,
        default=1,
        metavar="K",
        help="pack K small runs on each GPU (default 1)",
    )
    p.add_argument(
        "--devices-per-run", type=int, default=1, metavar="D",
        help="GPUs per run (D processes through accelerate; on the CPU, D gloo processes); default 1",
    )  # fmt: skip
    slurm = p.add_argument_group("more machines (SLURM, through submitit: pip install 'delphi[slurm]')")
    slurm.add_argument(
        "--executor", default="local", choices=("local", "slurm", "submitit-local"),
        help="local: processes on this machine (default); slurm: one SLURM job per run; submitit-local: "
        "submitit's local executor (real job processes here, to try the SLURM path)",
    )  # fmt: skip
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument(
        "--gpus-per-job", type=int, default=1, help="GPUs per SLURM job (0 for CPU jobs; default 1)"
    )
    slurm.add_argument(
        "--cpus-per-job", type=int, help="CPUs per SLURM job (threads are divided between its processes)"
    )
    slurm.add_argument(
        "--time", type=int, default=24 * 60, metavar="MINUTES", help="time limit per job (default 1440)"
    )
    slurm.add_argument(
        "--slurm", action="append", default=[], metavar="KEY=VALUE",
        help="any other submitit SLURM parameter, e.g. --slurm account=myproject --slurm qos=high",
    )  # fmt: skip
    slurm.add_argument(
        "--submitit-dir",
        default="out/submitit",
        help="where submitit keeps job scripts and job logs (default out/submitit)",
    )


def run(args: argparse.Namespace) -> None:
    """`delphi suite ...`: train the suite (or print its status); DelphiError if any run failed."""
    from delphi.suite import format_failures, run_suite, suite_status

    paths = dict(only=args.only, seeds=args.seeds, overrides=args.overrides)
    if args.status:
        print(suite_status(args.paths, **paths))
        return
    result = run_suite(
        args.paths,
        **paths,
        jobs=args.jobs,
        devices=args.devices,
        runs_per_device=args.runs_per_device,
        devices_per_run=args.devices_per_run,
        executor=args.executor,
        partition=args.partition,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        time_min=args.time,
        slurm_args=args.slurm,
        submitit_dir=args.submitit_dir,
        echo=lambda line: print(line, flush=True),
    )
    print(
        f"suite: {len(result.runs)} run(s): {len(result.trained)} trained, {len(result.skipped)} already "
        f"complete, {len(result.failed)} failed"
        + (f", {len(result.busy)} busy elsewhere" if result.busy else "")
    )
    if result.failed:
        print(format_failures(result), file=sys.stderr)
        raise DelphiError(
            f"{len(result.failed)} run(s) failed: {', '.join(result.failed)}; fix the cause and rerun the "
            "same command (complete runs are skipped, partial ones resume)"
        )
    if result.busy:
        raise DelphiError(
            f"{len(result.busy)} run(s) are being trained by another process: {', '.join(result.busy)}"
        )
