"""The processes of a run: who they are, what the launcher meant, and how they agree and end.

- Which world size the launcher was asked for, so a silently single-process launch is caught:
  `accelerate launch --cpu --num_processes 2` starts ONE process (accelerate's CPU path needs MPI for
  more) and says nothing. The training script is the only place that can notice: it reads the
  launcher's command line (its parent process) and compares.
- `agree`: a decision only the main process can take (what to do with the out_dir, is the hub
  reachable) reaches every process, and so does its error: no process trains on alone while
  another has stopped.
- `end_processes`: every process ends its process group before exiting, so none aborts at exit.
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


def world_size() -> int:
    """Processes in this run, from the launcher's environment (torchrun / accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def agree(decide):
    """`decide()` run on the main process; its result, or its error, given to every process.

    The other processes wait (within the process group's timeout) and then return the same value or
    raise the same DelphiError. Without a process group it is just `decide()`.
    """
    from delphi.errors import DelphiError

    if not _group_ready():
        return decide()
    import torch.distributed as dist

    payload: list = [None]
    failure: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            payload = [("ok", decide())]
        except BaseException as e:  # every process must hear of it, whatever it is
            failure = e
            message = (
                str(e) if isinstance(e, DelphiError) else f"the main process stopped: {type(e).__name__}: {e}"
            )
            payload = [("error", message)]
    dist.broadcast_object_list(payload, src=0)
    if failure is not None:
        raise failure
    kind, value = payload[0]
    if kind == "error":
        raise DelphiError(value)
    return value


def end_processes() -> None:
    """End this process's part of the process group (if any), so it exits cleanly.

    Without it, gloo's threads can outlive the interpreter's teardown and abort the process after a
    successful run ("terminate called without an active exception", exit status 134).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as e:  # a peer may already be gone; the run itself is finished
            log.debug("destroy_process_group: %s", e)
