"""Check the Triton kernels on a device before a run trusts them with its training.

The first time the Triton scan is asked for on a device (per dtype), it runs on a small random problem,
forward and backward, next to the chunked scan; a compile error, a crash or a difference beyond the
tolerance makes `triton_problem` return why, and the caller then runs the chunked scan instead. The
verdict is kept for the rest of the process. The random problem comes from its own generator: the
check leaves torch's global random state (and so the run's reproducibility) alone.
"""

from __future__ import annotations

import torch

from delphi.mamba.chunked import chunked_selective_scan

# Relative (norm-wise) difference from the chunked scan allowed for the output and every gradient:
# both run in float32 inside, so fp32 agrees to ~1e-7 and 16-bit inputs to their own rounding (~4e-3);
# a wrong kernel is off by order 1.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-4}
HALF_TOLERANCE = 3e-2
# batch, channels, steps: more channels than one Triton program's block (32), more steps than its chunk (16)
SHAPE = (2, 40, 20)
GRADIENTS = ("u", "dt", "A", "B", "C", "D", "z", "dt bias")

_verdicts: dict[tuple[str, torch.dtype], str | None] = {}


def triton_problem(device: torch.device, dtype: torch.dtype, state_size: int) -> str | None:
    """Why the Triton scan cannot be trusted on `device` for `dtype` inputs, or None when it passed."""
    key = (str(device), dtype)
    if key not in _verdicts:
        _verdicts[key] = check_scan(_triton_scan, torch.device(device), dtype, state_size)
    return _verdicts[key]


def forget_verdicts() -> None:
    """Check again on next use (tests; a process that changed its kernels)."""
    _verdicts.clear()


def _triton_scan(*args, **kwargs):
    from delphi.mamba.triton_scan import triton_selective_scan

    return triton_selective_scan(*args, **kwargs)


def check_scan(scan, device: torch.device, dtype: torch.dtype, state_size: int) -> str | None:
    """Compare `scan` with the chunked scan on a small random problem; None, or what went wrong."""
    with torch.inference_mode(False):
        inputs = _problem(device, dtype, state_size)
    want = _run(chunked_selective_scan, inputs)
    try:
        got = _run(scan, inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # a kernel's failure shows here, not at some later step
    except Exception as e:  # a compile error, an unsupported device, a crash in the kernel
        return f"{type(e).__name__}: {_one_line(e)}"
    tolerance = TOLERANCE.get(dtype, HALF_TOLERANCE)
    for name, g, w in zip(("output", *GRADIENTS), got, want, strict=True):
        g, w = g.detach().double(), w.detach().double()
        if g.shape != w.shape:
            return f"the {name} has shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        if not torch.isfinite(g).all():
            return f"the {name} is not finite"
        error = float((g - w).norm() / w.norm().clamp_min(1e-30))
        if error > tolerance:
            return f"the {name} differs from the chunked scan's by {error:.1e} (relative; tolerance {tolerance:g})"
    return None


def _problem(device: torch.device, dtype: torch.dtype, state_size: int) -> list[torch.Tensor]:
    """(u, dt, A, B, C, D, z, dt bias, output gradient) as a Mamba layer passes them, on `device`."""
    batch, channels, steps = SHAPE
    g = torch.Generator().manual_seed(0)

    def randn(*size):
        return torch.randn(*size, generator=g)

    u, dt, z = randn(batch, channels, steps), randn(batch, channels, steps) - 1, randn(batch, channels, steps)
    B, C = randn(batch, state_size, steps), randn(batch, state_size, steps)
    A = -torch.arange(1.0, state_size + 1)[None].expand(channels, state_size) * torch.exp(
        randn(channels, 1) * 0.2
    )
    D, bias, grad = randn(channels), randn(channels) * 0.5 - 2, randn(batch, channels, steps)
    per_step = [t.to(device, dtype) for t in (u, dt, B, C, z, grad)]
    u, dt, B, C, z, grad = per_step
    A, D, bias = (t.to(device) for t in (A, D, bias))  # float32, as the model's parameters
    return [u, dt, A, B, C, D, z, bias, grad]


def _run(scan, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    # the first use may come inside no_grad / inference_mode (generation) or autocast: none of them here
    device = inputs[0].device.type
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device, enabled=False):
        *leaves, grad = (t.clone().requires_grad_(i < len(inputs) - 1) for i, t in enumerate(inputs))
        u, dt, A, B, C, D, z, bias = leaves
        y = scan(u, dt, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)
        return [y, *torch.autograd.grad((y.float() * grad.float()).sum(), leaves)]


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
