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

from delphi.errors import DelphiError
from delphi.layout import SHARED_MARKER_PREFIX

log = logging.getLogger(__name__)


def _parent_argv(pid: int | None = None) -> list[str]:
    """The command line of the launcher (this process's parent), from /proc; [] where there is none."""
    pid = os.getppid() if pid is None else pid
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a for a in raw.decode(errors="replace").split("\0") if a]


def _flag(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _accelerate_config(argv: list[str]) -> dict:
    config = _flag(argv, "--config_file", "--config-file")
    if not config:
        return {}
    try:
        import yaml

        return yaml.safe_load(Path(config).read_text()) or {}
    except (OSError, ValueError):
        return {}


def requested_world_sizes(launcher_argv: list[str] | None = None) -> range | None:
    """The world sizes an `accelerate launch` or `torchrun` command line asked for, if it says.

    accelerate: `--num_processes` (or the config file's `num_processes`) is the TOTAL over all machines.
    torchrun: `--nproc_per_node` times `--nnodes`, where `--nnodes MIN:MAX` (elastic) allows a range.
    """
    argv = _parent_argv() if launcher_argv is None else launcher_argv
    text = " ".join(shlex.quote(a) for a in argv)
    is_accelerate = ("accelerate" in text and "launch" in argv) or "accelerate.commands.launch" in argv
    is_torchrun = "torchrun" in text or "torch.distributed.run" in text
    if is_accelerate:
        value = _flag(argv, "--num_processes", "--num-processes")
        if value is None:
            value = _accelerate_config(argv).get("num_processes")
        return range(int(value), int(value) + 1) if value is not None and str(value).isdigit() else None
    if not is_torchrun:
        return None
    per_node = _flag(argv, "--nproc_per_node", "--nproc-per-node")
    if per_node is None or not per_node.isdigit():
        return None
    nodes = (_flag(argv, "--nnodes") or "1").split(":")
    if not all(n.isdigit() for n in nodes):
        return None
    low, high = int(nodes[0]), int(nodes[-1])
    return range(int(per_node) * low, int(per_node) * high + 1, int(per_node))


def requested_world_size(launcher_argv: list[str] | None = None) -> int | None:
    """The one process count the launcher asked for, or None (none given, or an elastic range)."""
    sizes = requested_world_sizes(launcher_argv)
    return sizes[0] if sizes is not None and len(sizes) == 1 else None


def warn_if_world_size_differs(
    actual: int, launcher_argv: list[str] | None = None, environ: dict | None = None
) -> str | None:
    """Log a loud warning (and return it) when the processes that started are not what was meant."""
    environ = os.environ if environ is None else environ
    asked = requested_world_sizes(launcher_argv)
    tasks = environ.get("SLURM_NTASKS", "")
    if asked is None and tasks.isdigit() and int(tasks) > 1 and actual == 1 and "SLURM_STEP_ID" in environ:
        message = (
            f"srun started {tasks} tasks but each trains alone (world size 1): under SLURM, start one "
            "`torchrun` or `accelerate launch` per machine (see the README's multi-node section)"
        )
    elif asked is None or actual in asked:
        return None
    else:
        wanted = str(asked[0]) if len(asked) == 1 else f"{asked[0]} to {asked[-1]}"
        message = (
            f"the launcher was asked for {wanted} processes but this run has world size {actual}.\n"
            "!! `accelerate launch --cpu --num_processes N` starts ONE process without MPI.\n"
            "!! For N CPU processes use: accelerate launch --config_file accelerate_configs/multi-cpu.yaml "
            "--num_processes N -m delphi.train ...\n"
            "!! (or torchrun --nproc_per_node N -m delphi.train ...). The global batch is unchanged either way."
        )
    message = f"\n{'!' * 78}\n!! {message}\n{'!' * 78}"
    log.warning(message)
    return message


def warn_if_devices_idle(local_world: int, device_count: int) -> str | None:
    """Warn when one machine runs another number of processes than it has GPUs (e.g. accelerate's
    `--num_processes` given per machine instead of in total)."""
    if device_count < 1 or local_world == device_count:
        return None
    message = (
        f"this machine runs {local_world} process(es) but has {device_count} visible GPU(s); with "
        "`accelerate launch`, --num_processes is the total over all machines (GPUs per machine x machines)"
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


_ENDS_AT_EXIT: list[bool] = []


def end_processes_at_exit() -> None:
    """Make sure this process ends its process group when the interpreter exits (once per process).

    `delphi train` ends it itself; this covers everyone else who drives DelphiTrainer from a script of
    their own under torchrun or accelerate, so that their processes exit 0 too.
    """
    if not _ENDS_AT_EXIT:
        import atexit

        atexit.register(end_processes)
        _ENDS_AT_EXIT.append(True)


def end_processes() -> None:
    """End this process's part of the process group (if any), together with the others, so it exits 0.

    A gloo process whose group outlives the interpreter, or whose peers tear theirs down while it still
    talks to them, can abort after a successful run ("terminate called without an active exception",
    exit status 134). So the processes first meet (a gloo barrier that gives up after a minute, should a
    peer be gone), then each destroys its group.
    """
    import datetime

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_world_size() > 1 and dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60), wait_all_ranks=True)
    except Exception as e:  # a peer is gone: nothing to wait for
        log.debug("end_processes: barrier: %s", e)
    try:
        dist.destroy_process_group()
    except Exception as e:  # a peer may already be gone; the run itself is finished
        log.debug("destroy_process_group: %s", e)


def check_shared_out_dir(out_dir: str | os.PathLike) -> None:
    """Stop every process unless all of them see the out_dir that process 0 writes to.

    Only process 0 writes checkpoints; the others read them back when the run resumes. On machines
    with separate disks that silently breaks (they resume from nothing and the collectives mismatch),
    so process 0 writes a token file, every process looks for it, and all agree on the answer.
    """
    if not _group_ready():
        return
    import secrets

    import torch.distributed as dist

    out_dir = Path(out_dir)
    marker = out_dir / f"{SHARED_MARKER_PREFIX}{agree(lambda: secrets.token_hex(8))}"
    main = dist.get_rank() == 0
    created = not out_dir.exists() if main else False

    def write_marker() -> None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            marker.write_text("written by process 0 to check that every process sees this out_dir\n")
        except OSError as e:
            raise DelphiError(f"cannot write to out_dir {str(out_dir)!r}: {e.strerror or e}") from e

    agree(write_marker)  # every process hears of a failure, and knows the marker is there
    seen: list = [None] * dist.get_world_size()
    dist.all_gather_object(seen, _sees(marker))
    dist.barrier()
    if main:
        marker.unlink(missing_ok=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
    blind = [rank for rank, ok in enumerate(seen) if not ok]
    if blind:
        raise DelphiError(
            f"out_dir {str(out_dir)!r} is not shared: process(es) {blind} do not see what process 0 writes "
            "there (separate disks?). Every machine of a run must see the same out_dir: put it on a "
            "filesystem all machines share (NFS, Lustre, a cluster's shared home or scratch)"
        )


def _sees(marker: Path, patience: float = 10.0) -> bool:
    """Whether this machine sees `marker`, looking again for a few seconds: a network file system may
    answer from a cache that predates the file (listing the directory makes it look again)."""
    import time

    deadline = time.monotonic() + patience
    while True:
        for folder in (marker.parent.parent, marker.parent):
            try:
                os.listdir(folder)
            except OSError:
                pass
        if marker.exists():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def check_parallelism(args, trainer=None) -> None:
    """Stop before training when FSDP or DeepSpeed was asked for but is not what would run.

    accelerate turns FSDP on only from its GPU modes, so on a CPU an FSDP config silently trains as
    plain data parallelism; a run that believes it shards but does not is worse than one that stops.
    Called twice: with the TrainingArguments alone (before the Trainer, which would raise its own
    error for FSDP in one process), and with the Trainer, which knows what accelerate enabled.
    """
    import torch

    truthy = ("1", "true", "yes")
    asked = []
    if args.fsdp:
        asked.append(("FSDP", "training.fsdp", "is_fsdp_enabled"))
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in truthy:
        asked.append(("FSDP", "the accelerate config (distributed_type: FSDP)", "is_fsdp_enabled"))
    if args.deepspeed:
        asked.append(("DeepSpeed", "training.deepspeed", "is_deepspeed_enabled"))
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in truthy:
        asked.append(("DeepSpeed", "the accelerate config", "is_deepspeed_enabled"))
    for kind, source, enabled in asked:
        if not torch.cuda.is_available():
            why = f"accelerate enables {kind} only on GPUs and this machine has none"
        elif kind == "FSDP" and "LOCAL_RANK" not in os.environ:
            why = "FSDP needs a distributed launcher (accelerate launch or torchrun), even for one process"
        elif trainer is not None and not getattr(trainer, enabled):
            why = f"accelerate did not enable {kind}"
        elif (
            kind == "FSDP"
            and trainer is not None
            and "FULL_STATE_DICT" not in str(trainer.accelerator.state.fsdp_plugin.state_dict_type)
        ):
            raise DelphiError(
                "FSDP runs need fsdp_state_dict_type: FULL_STATE_DICT (as accelerate_configs/fsdp.yaml has): "
                "delphi's step folders hold the whole model and optimizer once, resumable on any layout"
            )
        else:
            continue
        layout = (
            f"plain data parallelism (DDP) over {world_size()} processes"
            if world_size() > 1
            else "one process"
        )
        remedy = (
            f"remove {source} from the recipe"
            if source.startswith("training.")
            else f"drop {kind} from {source}"
        )
        raise DelphiError(
            f"{kind} was asked for ({source}) but this run would train as {layout} instead: {why}. To train "
            f"with data parallelism instead, {remedy} (on a CPU: accelerate_configs/multi-cpu.yaml; results "
            "equal up to reduction order)"
        )
