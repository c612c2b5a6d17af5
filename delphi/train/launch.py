"""Which world size the launcher was asked for, so a silently single-process launch is caught.

`accelerate launch --cpu --num_processes 2` starts ONE process (accelerate's CPU path needs
MPI for more) and says nothing. The training script is the only place that can notice: it
reads the launcher's command line (its parent process) and compares.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

log = logging.getLogger(__name__)


def _parent_argv(pid: int | None = None) -> list[str]:
    pid = os.getppid() if pid is None else pid
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a for a in raw.decode(errors="replace").split("\0") if a]


def requested_world_size(launcher_argv: list[str] | None = None) -> int | None:
    """The process count an `accelerate launch` or `torchrun` command line asked for, if any.

    Reads `--num_processes`/`--num-processes` (accelerate), `--nproc_per_node`/`--nproc-per-node`
    and `--nnodes` (torchrun), and `num_processes` from an accelerate `--config_file`.
    """
    argv = _parent_argv() if launcher_argv is None else launcher_argv
    text = " ".join(shlex.quote(a) for a in argv)
    is_accelerate = ("accelerate" in text and "launch" in argv) or "accelerate.commands.launch" in argv
    is_torchrun = "torchrun" in text or "torch.distributed.run" in text
    if not (is_accelerate or is_torchrun):
        return None

    def flag(*names: str) -> str | None:
        for i, arg in enumerate(argv):
            for name in names:
                if arg == name and i + 1 < len(argv):
                    return argv[i + 1]
                if arg.startswith(name + "="):
                    return arg.split("=", 1)[1]
        return None

    if is_accelerate:
        value = flag("--num_processes", "--num-processes")
        if value is None and (config := flag("--config_file", "--config-file")):
            try:
                import yaml

                value = (yaml.safe_load(Path(config).read_text()) or {}).get("num_processes")
            except (OSError, ValueError):
                value = None
        return int(value) if value is not None and str(value).isdigit() else None
    per_node = flag("--nproc_per_node", "--nproc-per-node")
    nodes = flag("--nnodes")
    if per_node is None or not per_node.isdigit():
        return None
    return int(per_node) * (int(nodes) if nodes and nodes.isdigit() else 1)


def warn_if_world_size_differs(actual: int, launcher_argv: list[str] | None = None) -> str | None:
    """Log a loud warning (and return it) when the launcher asked for another process count."""
    asked = requested_world_size(launcher_argv)
    if asked is None or asked == actual:
        return None
    message = (
        f"\n{'!' * 78}\n"
        f"!! the launcher was asked for {asked} processes but this run has world size {actual}.\n"
        "!! `accelerate launch --cpu --num_processes N` starts ONE process without MPI.\n"
        "!! For N CPU processes use: accelerate launch --config_file accelerate_configs/multi-cpu.yaml "
        "--num_processes N -m delphi.train ...\n"
        "!! (or torchrun --nproc_per_node N -m delphi.train ...). The global batch is unchanged either way.\n"
        f"{'!' * 78}"
    )
    log.warning(message)
    return message
