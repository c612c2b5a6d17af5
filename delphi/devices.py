"""`--device`: the torch device a command runs on, checked before anything is loaded.

torch itself reports a device it cannot use only once a tensor goes there (an AssertionError for CUDA
on a CPU-only build, a RuntimeError for a misspelled name), after a model and a dataset were loaded;
`resolve_device` says it in one line up front, naming the devices this machine has.
"""

from __future__ import annotations

from delphi.errors import DelphiError


def available_devices() -> list[str]:
    """The devices torch can use here: `cpu`, then `cuda:0`..., `mps`, `xpu:0`... where present."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found += [f"xpu:{i}" for i in range(xpu.device_count())]
    return found


def default_device() -> str:
    """cuda when torch has a GPU, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> str:
    """`device` checked to be one torch can run on here (None: `default_device()`), else a DelphiError
    that names it and the devices there are."""
    import torch

    if device is None:
        return default_device()
    available = available_devices()
    expected = f"available here: {', '.join(available)}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DelphiError(f"--device {device!r} is not a torch device; {expected}") from None
    if parsed.type == "cpu":
        return device
    backend = {"mps": getattr(torch.backends, "mps", None)}.get(
        parsed.type, getattr(torch, parsed.type, None)
    )
    if backend is None or not callable(getattr(backend, "is_available", None)):
        raise DelphiError(f"--device {device!r}: delphi cannot run on {parsed.type!r} devices; {expected}")
    if not backend.is_available():
        why = ""
        if parsed.type == "cuda":
            why = (
                f" (torch {torch.__version__} is built without CUDA)"
                if torch.version.cuda is None
                else " (no CUDA GPU is visible)"
            )
        raise DelphiError(f"--device {device!r} is not available{why}; {expected}")
    count = getattr(backend, "device_count", None)
    if parsed.index is not None and callable(count) and parsed.index >= count():
        raise DelphiError(f"--device {device!r}: there is no {parsed.type} device {parsed.index}; {expected}")
    return device
