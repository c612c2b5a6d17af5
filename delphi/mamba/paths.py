"""Which selective-scan implementation a delphi Mamba model runs, and plugging it into the model.

Each `MambaMixer` gets its own `forward` (transformers' forward with the scan swapped in, see
`mixer.py`) and a `scan_path` attribute; parameters, buffers, state dict and config are untouched, so
checkpoints stay plain `MambaForCausalLM` that load anywhere with `from_pretrained`, where they run
transformers' own path.

- auto: cuda-kernels on a CUDA device when mamba-ssm is installed, else triton on a CUDA device when
  triton is installed, else chunked. Decided per call from the input's device, since the Trainer moves
  the model after it is built.
- cuda-kernels: transformers' own forward, which uses mamba-ssm's fused CUDA kernels.
- triton: delphi's Triton kernels (CUDA; or anywhere under TRITON_INTERPRET=1, slowly).
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

from delphi.errors import DelphiError

logger = logging.getLogger("delphi.mamba")

from delphi.mamba.choices import SCAN_PATHS  # noqa: E402 (re-exported)

_logged: set[tuple[str, str]] = set()


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
        from delphi.mamba.chunked import chunked_selective_scan

        return chunked_selective_scan
    if path == "triton":
        from delphi.mamba.triton_scan import triton_selective_scan

        return triton_selective_scan
    if path in ("mambapy", "reference"):
        from transformers.models.mamba import modeling_mamba

        # unwrapped: the PyTorch function itself, even where mamba-ssm replaces it
        torch_scan = inspect.unwrap(modeling_mamba.mamba_selective_scan)
        return functools.partial(torch_scan, use_mambapy=path == "mambapy", use_associative_scan=False)
    raise ValueError(f"no scan function for path {path!r}")


def apply_scan_path(model: torch.nn.Module, path: str = "auto") -> int:
    """Make every `MambaMixer` in `model` run the `path` scan; returns how many there are (0: not Mamba).

    Checks `path` first (DelphiError), so a recipe asking for what this machine lacks fails before training.
    """
    from transformers.models.mamba.modeling_mamba import MambaMixer

    mixers = [m for m in model.modules() if type(m) is MambaMixer]
    if not mixers:
        return 0
    check_scan_path(path)
    for mixer in mixers:
        mixer.scan_path = path
        mixer.forward = types.MethodType(_forward, mixer)
    cpu, cuda = resolve_scan_path(path, "cpu"), resolve_scan_path(path, "cuda")
    where = cpu if cpu == cuda else f"{cpu} on CPU, {cuda} on CUDA"
    logger.info("Mamba selective scan: %s (%s)", where, f"mamba_scan: {path}")
    return len(mixers)


def scan_path_of(model: torch.nn.Module) -> str | None:
    """The `mamba_scan` a model's mixers were given by `apply_scan_path`, or None (transformers' own)."""
    return next((m.scan_path for m in model.modules() if hasattr(m, "scan_path")), None)


def _forward(mixer, hidden_states: torch.Tensor, cache=None, attention_mask=None, **kwargs):
    from transformers.models.mamba.modeling_mamba import MambaMixer

    from delphi.mamba.mixer import mixer_forward

    device = hidden_states.device
    path = resolve_scan_path(mixer.scan_path, device)
    if (path, device.type) not in _logged:
        _logged.add((path, device.type))
        logger.info("Mamba selective scan on %s: %s", device.type, path)
    if path == "triton" and device.type != "cuda" and not triton_interpreted():
        raise DelphiError(f"mamba_scan 'triton' needs a CUDA device, but the model runs on {device.type}")
    if path == "cuda-kernels":
        return MambaMixer.forward(mixer, hidden_states, cache=cache, attention_mask=attention_mask, **kwargs)
    return mixer_forward(mixer, scan_function(path), hidden_states, cache, attention_mask, **kwargs)
