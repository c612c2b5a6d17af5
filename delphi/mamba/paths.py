"""Which selective-scan implementation a delphi Mamba model runs, and plugging it into the model.

Each `MambaMixer` gets its own `forward` (transformers' forward with the scan swapped in, see
`mixer.py`) and a `scan_path` attribute; parameters, buffers, state dict and config are untouched, so
checkpoints stay plain `MambaForCausalLM` that load anywhere with `from_pretrained`, where they run
transformers' own path. `scan_paths_in_use(model)` says which scan actually ran, per device and dtype.

- auto: cuda-kernels on a CUDA device when mamba-ssm is installed, else triton on a CUDA device when
  triton is installed, else chunked. Decided per call from the input's device, since the Trainer moves
  the model after it is built.
- cuda-kernels: transformers' own forward, which uses mamba-ssm's fused CUDA kernels.
- triton: delphi's Triton kernels (CUDA; or anywhere under TRITON_INTERPRET=1, slowly). Checked against
  the chunked scan on first use per device and dtype (`selfcheck.py`); on a failure, one warning and the
  chunked scan instead.
- chunked: delphi's chunked scan in plain PyTorch, for CPU and any device.
- mambapy: transformers' scan with mamba.py's parallel scan.
- reference: transformers' sequential scan, one step at a time.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import os
import types
from collections.abc import Callable

import torch

from delphi.compat import private
from delphi.errors import DelphiError
from delphi.mamba.chunked import chunked_selective_scan
from delphi.mamba.mixer import IncompatibleForward, forward_with_scan, mixer_class
from delphi.mamba.selfcheck import triton_problem
from delphi.quiet import quiet_kernel_fallback_warnings
from delphi.recipe.schema import SCAN_PATHS  # the recipe's vocabulary (re-exported)

logger = logging.getLogger("delphi.mamba")

_logged: set[tuple[str, str]] = set()
_warned: set[tuple[str, torch.dtype]] = set()


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def missing_requirement(path: str) -> str | None:
    """Why `path` cannot run on this machine, or None when it can."""
    if path == "cuda-kernels":
        if importlib.util.find_spec("mamba_ssm") is None:
            return "mamba-ssm is not installed (pip install 'delphi[mamba_cuda]', on a CUDA machine)"
        if not torch.cuda.is_available():
            return "no CUDA device"
    if path == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install triton)"
        if not torch.cuda.is_available() and not triton_interpreted():
            return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels slowly on the CPU)"
    if path == "mambapy" and importlib.util.find_spec("mambapy") is None:
        return "mambapy is not installed (pip install mambapy)"
    return None


def check_scan_path(path: str) -> None:
    """DelphiError naming the problem when `path` is unknown or cannot run here."""
    if path not in SCAN_PATHS:
        raise DelphiError(f"unknown mamba_scan {path!r}; expected one of {', '.join(SCAN_PATHS)}")
    problem = missing_requirement(path)
    if problem:
        raise DelphiError(f"mamba_scan {path!r} cannot run here: {problem}; use mamba_scan: auto")


def resolve_scan_path(path: str, device: torch.device | str) -> str:
    """The concrete path `path` means for tensors on `device` ("auto" is decided here)."""
    if path != "auto":
        return path
    if torch.device(device).type == "cuda":
        for candidate in ("cuda-kernels", "triton"):
            if missing_requirement(candidate) is None:
                return candidate
    return "chunked"


@functools.cache
def scan_function(path: str) -> Callable:
    """The scan for a concrete path other than cuda-kernels, with transformers' `mamba_selective_scan`'s
    arguments: (hidden_states, dt, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)."""
    if path == "chunked":
        return chunked_selective_scan
    if path == "triton":
        from delphi.mamba.triton_scan import triton_selective_scan

        return triton_selective_scan
    if path in ("mambapy", "reference"):
        # unwrapped: the PyTorch function itself, even where mamba-ssm replaces it
        torch_scan = inspect.unwrap(private("transformers.models.mamba.modeling_mamba.mamba_selective_scan"))
        return functools.partial(torch_scan, use_mambapy=path == "mambapy", use_associative_scan=False)
    raise ValueError(f"no scan function for path {path!r}")


def apply_scan_path(model: torch.nn.Module, path: str = "auto") -> int:
    """Make every `MambaMixer` in `model` run the `path` scan; returns how many there are (0: not Mamba).

    Checks `path` first (DelphiError), so a recipe asking for what this machine lacks fails before training.
    """
    mixer_type = mixer_class()
    mixers = [m for m in model.modules() if type(m) is mixer_type]
    if not mixers:
        return 0
    check_scan_path(path)
    quiet_kernel_fallback_warnings()
    for mixer in mixers:
        mixer.scan_path = path
        mixer.scan_runs = {}
        mixer.forward = types.MethodType(_forward, mixer)
    cpu, cuda = resolve_scan_path(path, "cpu"), resolve_scan_path(path, "cuda")
    where = cpu if cpu == cuda else f"{cpu} on CPU, {cuda} on CUDA"
    logger.info("Mamba selective scan: %s (%s)", where, f"mamba_scan: {path}")
    return len(mixers)


def scan_path_of(model: torch.nn.Module) -> str | None:
    """The `mamba_scan` a model's mixers were given by `apply_scan_path`, or None (transformers' own)."""
    return next((m.scan_path for m in model.modules() if hasattr(m, "scan_path")), None)


def scan_paths_in_use(model: torch.nn.Module) -> dict[str, str]:
    """The scan each device and dtype actually ran so far, e.g. {"cuda/bfloat16": "triton"} or
    {"cuda/bfloat16": "chunked (triton failed its self-check: ...)"}; {} before the first forward and for
    models that `apply_scan_path` did not touch. For run records (run_context.json)."""
    runs: dict[str, list[str]] = {}
    for module in model.modules():
        for key, what in getattr(module, "scan_runs", {}).items():
            if what not in runs.setdefault(key, []):
                runs[key].append(what)
    return {key: " | ".join(whats) for key, whats in sorted(runs.items())}


def _forward(mixer, hidden_states: torch.Tensor, *args, **kwargs):
    """The mixer's forward: transformers' own, running the scan of the mixer's path for this device."""
    device, dtype = hidden_states.device, _scan_dtype(hidden_states)
    path = what = resolve_scan_path(mixer.scan_path, device)
    if path == "triton":
        if device.type != "cuda" and not triton_interpreted():
            raise DelphiError(f"mamba_scan 'triton' needs a CUDA device, but the model runs on {device.type}")
        problem = triton_problem(device, dtype, mixer.A_log.shape[-1])
        if problem is not None:
            path, what = "chunked", f"chunked (triton failed its self-check: {problem})"
            if (str(device), dtype) not in _warned:
                _warned.add((str(device), dtype))
                logger.warning(
                    "Mamba selective scan: the Triton kernels failed their self-check on %s for %s inputs (%s); "
                    "running the chunked scan instead", device, str(dtype).removeprefix("torch."), problem
                )  # fmt: skip
    forward, problem = (None, None) if path == "cuda-kernels" else _plugged_forward(path)
    if problem is not None:
        path = what = f"transformers ({problem})"
    _record(mixer, device, dtype, path, what)
    return (forward or _stock_forward)(mixer, hidden_states, *args, **kwargs)


def _record(mixer, device: torch.device, dtype: torch.dtype, path: str, what: str) -> None:
    mixer.scan_runs[f"{device.type}/{str(dtype).removeprefix('torch.')}"] = what
    if (path, device.type) not in _logged:
        _logged.add((path, device.type))
        logger.info("Mamba selective scan on %s: %s", device.type, path)


def _scan_dtype(hidden_states: torch.Tensor) -> torch.dtype:
    """The dtype the scan will see: autocast's where it is on (the input projection casts), else the input's."""
    device = hidden_states.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden_states.dtype


def _stock_forward(mixer, *args, **kwargs):
    return mixer_class().forward(mixer, *args, **kwargs)


@functools.cache
def _plugged_forward(path: str) -> tuple[Callable | None, str | None]:
    """(transformers' MambaMixer.forward running the `path` scan, None), or (None, why it cannot be made)."""
    scan = scan_function(path)

    def run_scan(*args, use_mambapy=None, use_associative_scan=None, **kwargs):  # transformers-only options
        return scan(*args, **kwargs)

    try:
        return forward_with_scan(run_scan), None
    except IncompatibleForward as e:
        problem = f"delphi's scan cannot be plugged into this transformers: {e}"
        if ("plug", problem) not in _logged:
            _logged.add(("plug", problem))
            logger.warning(
                "Mamba selective scan: %s; running transformers' own forward (correct, slow)", problem
            )
        return None, problem
