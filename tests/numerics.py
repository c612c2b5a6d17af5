"""Tolerances for numbers compared across a change of layout, threads, kernels or code path.

Two computations that differ only in the order of floating-point sums (another process count, thread
count, micro-batch split, SIMD kernel, or a fused instead of a plain loss) do not give the same bits, and
which bits differ depends on the CPU: torch picks its kernels by `ATEN_CPU_CAPABILITY` (default, avx2,
avx512), and so do MKL and oneDNN. A tolerance that held on one CPU is a guess about every other, so each
bound here is derived from what it compares, and every comparison reports what it measured: with
`DELPHI_NUMERICS_REPORT=FILE`, one JSON line per comparison (test, what, measured, tolerance, the kernel
level and thread count), which `scripts/numerics_matrix.py` (`make test-numerics`) gathers into a table of
worst cases under every kernel level and thread count.

The bounds, and why (eps = float32's 1.2e-7):

- WEIGHT_DRIFT, weights after training along two reduction orders: per tensor, the L2 distance between
  the two runs over the L2 distance the reference run moved that tensor from where both started. Each
  step's gradients differ by a few ulps; Adam divides each update by sqrt(v), so an element whose gradient
  is near zero (a rarely seen token's embedding row) can take a visibly different step (the elementwise
  1e-6 bound that failed on AVX-512 hit one such element). Measured relative to how far training moved the
  tensor, the drift stays within a small multiple of eps x steps; a defect that changes what is trained
  (another batch, a gradient scaled by the accumulation factor, a skipped step) moves a tensor by a sizeable
  fraction of its whole movement. 1e-3 sits far from both (see the measurements in the README).
- LOSS_DRIFT, a loss computed after steps along two reduction orders, relative to the loss: the weights
  differ by the drift above, which changes the loss by far less than 1e-5 of itself on these models; a
  wrong batch or step changes it in the second decimal.
- same-weights comparisons (one forward computed two ways) use summation_bound(n): a float32 sum of n
  terms of one sign computed in any order is within (n - 1) eps of the exact sum, relative to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import torch

EPS32 = torch.finfo(torch.float32).eps
WEIGHT_DRIFT = 1e-3
LOSS_DRIFT = 1e-5


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def record(what: str, measured: float, tolerance: float | None = None) -> None:
    """Append one measurement to $DELPHI_NUMERICS_REPORT (if set): the raw material of the margins table.
    A measurement recorded without a tolerance is only reported (the README's ranges)."""
    path = os.environ.get("DELPHI_NUMERICS_REPORT")
    if not path:
        return
    row = {
        "test": _current_test(),
        "what": what,
        "measured": float(measured),
        "tolerance": None if tolerance is None else float(tolerance),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    with open(path, "a") as out:
        out.write(json.dumps(row) + "\n")


def check(what: str, measured: float, tolerance: float) -> None:
    """Record `measured` and require it within `tolerance`."""
    record(what, measured, tolerance)
    assert measured <= tolerance, f"{what}: {measured:.3g} exceeds its tolerance {tolerance:.3g}"


def weight_drift(got: Mapping, want: Mapping, start: Mapping) -> dict[str, float]:
    """Per tensor: |got - want| / |want - start| (L2 norms, float64): how far apart two runs ended, as a
    fraction of how far training moved that tensor. A tensor training did not move must match exactly."""
    assert sorted(got) == sorted(want) == sorted(start)
    drift = {}
    for name, reference in want.items():
        reference = reference.double()
        apart = (got[name].double() - reference).norm().item()
        moved = (reference - start[name].double()).norm().item()
        drift[name] = apart / moved if moved > 0 else (0.0 if apart == 0 else float("inf"))
    return drift


def assert_weights_agree(got: Mapping, want: Mapping, start: Mapping, *, what: str = "weights") -> None:
    """Two runs of one training that differ only in reduction order (see WEIGHT_DRIFT)."""
    drift = weight_drift(got, want, start)
    worst = max(drift, key=drift.get)
    record(f"{what}: relative L2 of all weights (reported)", relative_l2(got, want))
    record(f"{what}: largest single difference (reported)", max(max_abs(got[k], want[k]) for k in want))
    check(f"{what}: worst tensor's drift / movement", drift[worst], WEIGHT_DRIFT)


def relative_l2(got: Mapping, want: Mapping) -> float:
    """|got - want| / |want| over all tensors together: the README's measure of layout differences."""
    apart = sum((got[k].double() - want[k].double()).pow(2).sum().item() for k in want)
    size = sum(want[k].double().pow(2).sum().item() for k in want)
    return (apart / size) ** 0.5


def assert_losses_agree(got: Mapping, want: Mapping, *, tolerance: float = LOSS_DRIFT, what: str = "loss"):
    """Losses at the same steps (or keys) of two computations, each relative to the reference loss."""
    assert got.keys() == want.keys(), (sorted(got), sorted(want))
    worst = max(abs(got[k] - want[k]) / abs(want[k]) for k in want)
    check(f"{what}: worst relative difference over {len(want)}", worst, tolerance)


def max_abs(got: torch.Tensor, want: torch.Tensor) -> float:
    return (got.double() - want.double()).abs().max().item()


def worst_tensor_relative(got: Mapping, want: Mapping) -> float:
    """max over tensors of |got - want| / |want| (L2): the same tensors computed along two paths."""
    assert sorted(got) == sorted(want)
    return max(
        (got[k].double() - want[k].double()).norm().item() / max(want[k].double().norm().item(), 1e-300)
        for k in want
    )


def max_relative(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: a difference relative to the size of what is compared."""
    scale = want.double().abs().max().item()
    return (got.double() - want.double()).abs().max().item() / scale if scale else 0.0


def summation_bound(terms: int) -> float:
    """Relative bound on a float32 sum of `terms` terms of one sign (a mean loss, a logsumexp) computed in
    any order: (terms - 1) x eps (Higham, Accuracy and Stability of Numerical Algorithms, section 4.2).
    Two orders differ by at most twice that."""
    return 2 * terms * EPS32


def threads_under_test() -> int:
    """torch threads for tests (1, unless DELPHI_TEST_THREADS says otherwise: see conftest.py)."""
    return int(os.environ.get("DELPHI_TEST_THREADS", "1"))
