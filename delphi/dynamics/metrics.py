"""The numbers `delphi dynamics` reports, as plain functions on torch tensors.

Every function computes in float64 (a copy of the tensor; the models here are small, so it is cheap) so
that a metric of a float32 matrix carries no more rounding than the float32 values themselves: sums of
squares over a million entries and ratios of nearly equal singular values lose digits in float32.
Where torch has the operation it is used (`torch.linalg.svdvals`, `matrix_norm`, `vector_norm`, `cond`).

Matrix metrics take a 2-D tensor; a tensor of more dimensions is viewed as (shape[0], rest) by
`as_matrix` (a Mamba conv1d weight (channels, 1, kernel) becomes one row per channel: its kernel).
Vector metrics take any tensor, flattened.
"""

from __future__ import annotations

import math

import torch

MATRIX_METRICS = (
    "frobenius", "spectral", "nuclear", "condition", "effective_rank", "gini", "hoyer",
)  # fmt: skip
VECTOR_METRICS = ("l2", "gini", "hoyer")
GRAD_MATRIX_METRICS = ("frobenius", "spectral", "nuclear")


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """A 2-D float64 view of a parameter: rows are its first dimension (output channels), columns the
    rest flattened (a conv1d weight (channels, in/groups, kernel) -> (channels, in/groups x kernel))."""
    if tensor.dim() < 2:
        raise ValueError(
            f"a matrix metric needs a tensor of 2 or more dimensions, got shape {tuple(tensor.shape)}"
        )
    return tensor.detach().to(torch.float64).reshape(tensor.shape[0], -1)


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """The singular values of a matrix (float64, descending), through its square triangular factor.

    A tall matrix (an embedding: vocab x hidden) is first reduced to its n x n factor R by a QR
    decomposition (A = QR, Q with orthonormal columns, so A and R have the same singular values; Householder
    QR is backward stable, so this is as accurate as an SVD of A). LAPACK's SVD of a 2048 x 128 matrix took
    100 ms with 2 threads on a busy 2-core machine, the QR and the 128 x 128 SVD 6 ms.
    """
    m = as_matrix(matrix)
    if m.shape[0] < m.shape[1]:
        m = m.T
    if m.shape[0] > m.shape[1]:
        m = torch.linalg.qr(m, mode="r").R
    return torch.linalg.svdvals(m)


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(torch.float64).reshape(-1)


def frobenius(matrix: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(as_matrix(matrix), ord="fro").item()


def spectral(matrix: torch.Tensor) -> float:
    """The largest singular value."""
    return torch.linalg.matrix_norm(as_matrix(matrix), ord=2).item()


def nuclear(matrix: torch.Tensor) -> float:
    """The sum of the singular values."""
    return torch.linalg.matrix_norm(as_matrix(matrix), ord="nuc").item()


def condition_number(matrix: torch.Tensor) -> float:
    """Largest over smallest singular value (of the min(m, n) there are); inf for a rank-deficient matrix."""
    return torch.linalg.cond(as_matrix(matrix)).item()


def effective_rank(matrix: torch.Tensor) -> float:
    """The participation ratio of the singular values, (sum s)^2 / sum s^2 = (nuclear / Frobenius)^2.

    Why this definition: it needs no threshold (a numerical rank counts singular values above a cutoff
    someone must choose), it moves smoothly as the spectrum changes (so it can be followed over training),
    it is scale-free, and it runs from 1 (one direction) to min(m, n) (all singular values equal, e.g. the
    identity of size n gives n). The entropy effective rank of Roy & Vetterli (2007) has the same ends but
    weighs small singular values more; the participation ratio is the one the issue asked for.
    """
    return _effective_rank(singular_values(matrix))


def _effective_rank(singular: torch.Tensor) -> float:
    squares = singular.square().sum().item()
    return singular.sum().item() ** 2 / squares if squares > 0 else float("nan")


def gini(tensor: torch.Tensor) -> float:
    """Gini index of |x| (Hurley & Rickard 2009): 0 when every entry has the same magnitude, towards 1
    when one entry holds all of it. Entries sorted ascending c_1..c_N: 1 - 2 sum_k c_k/|c|_1 (N-k+1/2)/N.
    NaN for an all-zero tensor (no magnitude to share out)."""
    c = _flat(tensor).abs().sort().values
    n = c.numel()
    total = c.sum()
    if n == 0 or total.item() == 0:
        return float("nan")
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return (1 - 2 * ((c / total) * ((n - k + 0.5) / n)).sum()).item()


def hoyer(tensor: torch.Tensor) -> float:
    """Hoyer sparsity (2004): (sqrt(N) - |x|_1/|x|_2) / (sqrt(N) - 1), 0 for equal magnitudes, 1 for one
    non-zero entry. NaN for an all-zero tensor or a single entry."""
    x = _flat(tensor)
    n = x.numel()
    l2 = torch.linalg.vector_norm(x, 2).item()
    if n < 2 or l2 == 0:
        return float("nan")
    l1 = torch.linalg.vector_norm(x, 1).item()
    return (math.sqrt(n) - l1 / l2) / (math.sqrt(n) - 1)


def l2(tensor: torch.Tensor) -> float:
    return torch.linalg.vector_norm(_flat(tensor), 2).item()


def relative_distance(tensor: torch.Tensor, reference: torch.Tensor) -> float:
    """|W - W_ref| / |W_ref| (Frobenius, i.e. L2 over all entries): how far W moved, as a fraction of the
    reference's size; NaN when the reference is all zeros."""
    ref = _flat(reference)
    size = torch.linalg.vector_norm(ref, 2).item()
    if size == 0:
        return float("nan")
    return torch.linalg.vector_norm(_flat(tensor) - ref, 2).item() / size


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two representations of the same n
    examples, x (n, p) and y (n, q): |Yc^T Xc|_F^2 / (|Xc^T Xc|_F |Yc^T Yc|_F), columns centred.

    Computed in feature space (p x q matrices, not n x n Gram matrices), so n may be the tokens of a whole
    probe batch. 1 for the same representation up to an orthogonal transform and an isotropic scale.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"CKA compares representations of the same examples: {x.shape[0]} vs {y.shape[0]} rows"
        )
    x = x.detach().to(torch.float64).reshape(x.shape[0], -1)
    y = y.detach().to(torch.float64).reshape(y.shape[0], -1)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x, ord="fro").square()
    norms = torch.linalg.matrix_norm(x.T @ x, ord="fro") * torch.linalg.matrix_norm(y.T @ y, ord="fro")
    return (cross / norms).item() if norms.item() > 0 else float("nan")


def matrix_metrics(matrix: torch.Tensor) -> dict[str, float]:
    """Every matrix metric of one weight, from one SVD (the same numbers as the functions above)."""
    m = as_matrix(matrix)
    singular = singular_values(m)
    smallest = singular[-1].item()
    return {
        "frobenius": torch.linalg.matrix_norm(m, ord="fro").item(),
        "spectral": singular[0].item(),
        "nuclear": singular.sum().item(),
        "condition": singular[0].item() / smallest if smallest > 0 else float("inf"),
        "effective_rank": _effective_rank(singular),
        "gini": gini(m),
        "hoyer": hoyer(m),
    }


def vector_metrics(tensor: torch.Tensor) -> dict[str, float]:
    """The metrics of a 1-D parameter (a norm's scale, Mamba's D, a bias): L2 norm and sparsity."""
    return {"l2": l2(tensor), "gini": gini(tensor), "hoyer": hoyer(tensor)}


def grad_metrics(tensor: torch.Tensor) -> dict[str, float]:
    """The norms of a gradient: Frobenius, spectral and nuclear for a matrix, L2 for a vector."""
    if tensor.dim() < 2:
        return {"l2": l2(tensor)}
    singular = singular_values(tensor)
    return {
        "frobenius": torch.linalg.matrix_norm(as_matrix(tensor), ord="fro").item(),
        "spectral": singular[0].item(),
        "nuclear": singular.sum().item(),
    }
