"""Run the cross-layout and cross-path tests (`-m numerics`) under every CPU kernel level and thread count
asked for, and print each comparison's worst measured value against its tolerance.

Numbers that cross a change of layout, threads or kernels depend on the machine: torch picks its CPU
kernels by ATEN_CPU_CAPABILITY (default, avx2, avx512 where the CPU has them), and MKL and oneDNN pick
theirs by their own switches, capped here to the same level so that a run emulates an older CPU as a whole.
This proves a tolerance on CPUs we do not own (tests/numerics.py says how each is derived).

    python scripts/numerics_matrix.py                         # every level this CPU offers, 1 thread
    python scripts/numerics_matrix.py --capabilities default --threads 1 2 4 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What each ATen level caps MKL and oneDNN to (their own names for the same instruction sets).
LIBRARY_CAPS = {
    "default": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"MKL_ENABLE_INSTRUCTIONS": "AVX512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}


def machine_capability() -> str:
    """The level torch picks on this CPU when nothing caps it (e.g. 'avx512'), in ATEN_CPU_CAPABILITY's spelling."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().lower()


def offered_capabilities() -> list[str]:
    """default, then avx2 where the CPU runs it, then the machine's own level."""
    own = machine_capability()
    levels = ["default"]
    if own in ("avx2", "avx512"):
        levels.append("avx2")
    if own not in levels:
        levels.append(own)
    return levels


def run_once(capability: str, threads: int, report: Path, pytest_args: list[str]) -> tuple[int, float]:
    env = {
        **os.environ,
        "ATEN_CPU_CAPABILITY": capability,
        "DELPHI_TEST_THREADS": str(threads),
        "DELPHI_NUMERICS_REPORT": str(report),
        **LIBRARY_CAPS.get(capability, {}),
    }
    command = [sys.executable, "-m", "pytest", "-m", "numerics", "-q", "-p", "no:cacheprovider", *pytest_args]
    print(f"== ATEN_CPU_CAPABILITY={capability} threads={threads}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO)
    return done.returncode, time.perf_counter() - started


def margins_table(rows: list[dict]) -> str:
    """One line per comparison: its tolerance, the worst value under each (level, threads), the margin."""
    worst: dict[tuple, dict] = defaultdict(dict)
    tolerance: dict[tuple, float] = {}
    for row in rows:
        key = (row["test"].split("::", 1)[-1], row["what"])
        setting = f"{row['capability'].lower()}/{row['threads']}t"
        worst[key][setting] = max(worst[key].get(setting, 0.0), row["measured"])
        tolerance[key] = row.get("tolerance")
    settings = sorted({s for values in worst.values() for s in values})
    lines = ["\t".join(["comparison", "tolerance", *settings, "margin"])]
    for key in sorted(worst):
        measured = worst[key]
        overall = max(measured.values())
        cells = [f"{measured[s]:.2e}" if s in measured else "-" for s in settings]
        if tolerance[key] is None:  # reported, not asserted
            bound, margin = "-", "-"
        else:
            bound = f"{tolerance[key]:.0e}"
            margin = f"{tolerance[key] / overall:.0f}x" if overall > 0 else "inf"
        lines.append("\t".join([f"{key[0]} | {key[1]}", bound, *cells, margin]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--capabilities", nargs="+", help="ATEN_CPU_CAPABILITY values (default: all offered)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1], help="torch threads (default: 1)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setting (default: 1)")
    parser.add_argument("--report", type=Path, help="keep the JSON lines here (default: a temporary file)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --), e.g. a test file")
    args = parser.parse_args(argv)
    capabilities = args.capabilities or offered_capabilities()
    report = args.report or Path(tempfile.mkdtemp()) / "numerics.jsonl"
    report.unlink(missing_ok=True)
    failed, summary = [], []
    for capability in capabilities:
        for threads in args.threads:
            for attempt in range(1, args.repeat + 1):
                status, seconds = run_once(capability, threads, report, args.pytest_args)
                summary.append(f"{capability}/{threads}t run {attempt}: exit {status} in {seconds:.0f} s")
                if status != 0:
                    failed.append(summary[-1])
    rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    print("\n" + "\n".join(summary))
    print(f"\nworst measured per comparison ({len(rows)} measurements, in {report}):")
    print(margins_table(rows))
    if failed:
        print("\nfailed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
