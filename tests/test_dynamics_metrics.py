"""The metrics of `delphi dynamics` against what mathematics says they are, and the naming of every
parameter of a Llama and a Mamba as (layer, component). No training: fast.

Tolerances (numerics.py's conventions): the metrics compute in float64, so a sum of n terms carries a
relative error of at most n x eps64 (Higham 4.2); where the input itself is float32 (a rotated float32
activation matrix), the input's own rounding, d x eps32 per entry for a product over d terms, dominates.
"""

from __future__ import annotations

import math

import pytest
import torch
from numerics import EPS32, check
from tiny import MAMBA_MODEL, MODEL

from delphi.dynamics import metrics
from delphi.dynamics.components import blocks, component_of, named_components

EPS64 = torch.finfo(torch.float64).eps


def random(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def orthogonal(n, seed=0, dtype=torch.float64):
    q, r = torch.linalg.qr(random(n, n, seed=seed, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def test_cka_of_a_representation_with_itself_is_one():
    x = random(512, 24)
    # ||X^T X||^2 / (||X^T X|| ||X^T X||): the same float64 sums on both sides, a few roundings apart
    check("CKA(X, X) - 1", abs(metrics.linear_cka(x, x) - 1), 8 * EPS64)


@pytest.mark.numerics
def test_cka_is_unchanged_by_rotation_and_isotropic_scaling_of_either_input():
    x, y = random(512, 24, seed=1), random(512, 16, seed=2) + 0.5 * random(512, 16, seed=3)
    base = metrics.linear_cka(x, y)
    assert 0.0 < base < 0.5  # unrelated representations: far from 1, so invariance is not trivially met
    qx, qy = orthogonal(24, seed=4).float(), orthogonal(16, seed=5).float()
    # the rotated inputs are float32 products over 24 terms: each entry off by <= 24 eps32 relative, which
    # moves CKA (a smooth ratio of quadratic forms) by a small multiple of that: the 1e-5 bound
    for name, a, b in [
        ("rotate x", x @ qx, y),
        ("rotate y", x, y @ qy),
        ("scale x by 7.5", 7.5 * x, y),
        ("scale y by 1e-3", x, 1e-3 * y),
        ("rotate and scale both", 3.0 * (x @ qx), 0.2 * (y @ qy)),
    ]:
        check(f"CKA invariance: {name}", abs(metrics.linear_cka(a, b) - base), 1e-5)
    assert 24 * EPS32 < 1e-5
    # and it sees a real difference: a representation mixed with another's
    assert abs(metrics.linear_cka(x, x + 2 * random(512, 24, seed=6)) - 1) > 0.1
    with pytest.raises(ValueError, match="same examples"):
        metrics.linear_cka(x, y[:10])


def test_gini_and_hoyer_of_constant_and_one_hot_vectors():
    n = 1000
    constant = torch.full((n,), -0.37)
    # (1 - 2 sum ...) over n float64 terms: within n eps64 of 0
    check("Gini of a constant vector", abs(metrics.gini(constant)), n * EPS64)
    check("Hoyer of a constant vector", abs(metrics.hoyer(constant)), n * EPS64)
    one_hot = torch.zeros(n)
    one_hot[17] = 4.0
    assert metrics.gini(one_hot) == pytest.approx(1 - 1 / n, abs=n * EPS64)  # the most unequal n-vector
    assert metrics.hoyer(one_hot) == pytest.approx(1.0, abs=n * EPS64)
    assert math.isnan(metrics.gini(torch.zeros(5))) and math.isnan(metrics.hoyer(torch.zeros(5)))
    spread = torch.linspace(0, 1, 101)
    assert 0 < metrics.gini(spread) < 1 and 0 < metrics.hoyer(spread) < 1
    assert metrics.gini(spread.reshape(101, 1)) == metrics.gini(spread)  # any shape: its entries


@pytest.mark.numerics
def test_effective_rank_condition_number_and_norms():
    n = 32
    eye = torch.eye(n)
    check("effective rank of the identity - n", abs(metrics.effective_rank(eye) - n), n * n * EPS64)
    # Householder QR's Q is orthogonal to within c m n eps (Higham 19.3): its singular values too
    q = orthogonal(n, seed=7)
    check("condition number of an orthogonal matrix - 1", abs(metrics.condition_number(q) - 1), n * n * EPS64)
    # a rank-one matrix (float64: float32 rounding alone would give it other singular values of ~eps32):
    # effective rank 1 + 2 (sum of the rounding's singular values) / s_1, condition beyond any float32 one
    rank_one = torch.outer(random(8, seed=8, dtype=torch.float64), random(5, seed=9, dtype=torch.float64))
    check(
        "effective rank of a rank-one matrix - 1",
        abs(metrics.effective_rank(rank_one) - 1),
        2 * 5 * 8 * EPS64,
    )
    assert metrics.condition_number(rank_one) > 1 / EPS32

    diag = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    want = {
        "frobenius": math.sqrt(14), "spectral": 3.0, "nuclear": 6.0, "condition": 3.0,
        "effective_rank": 36 / 14,
    }  # fmt: skip
    got = metrics.matrix_metrics(diag)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=16 * EPS64), name
    # matrix_metrics (one SVD) gives what the single-metric functions (torch.linalg each) give
    w = random(48, 20, seed=10)
    singles = {
        "frobenius": metrics.frobenius(w), "spectral": metrics.spectral(w), "nuclear": metrics.nuclear(w),
        "condition": metrics.condition_number(w), "effective_rank": metrics.effective_rank(w),
        "gini": metrics.gini(w), "hoyer": metrics.hoyer(w),
    }  # fmt: skip
    together = metrics.matrix_metrics(w)
    assert set(together) == set(metrics.MATRIX_METRICS) == set(singles)
    for name, value in singles.items():
        assert together[name] == pytest.approx(value, rel=48 * 20 * EPS64), name


@pytest.mark.numerics
def test_singular_values_through_the_triangular_factor_equal_lapacks():
    for shape in [(300, 24), (24, 300), (40, 40), (64, 1)]:
        a = random(*shape, seed=13)
        want = torch.linalg.svdvals(a.double())
        got = metrics.singular_values(a)
        assert got.shape == want.shape and got.dtype == torch.float64
        # both backward stable: each within c m n eps64 of the exact values, relative to the largest
        check(
            f"singular values via QR {shape}",
            ((got - want).abs().max() / want[0]).item(),
            shape[0] * shape[1] * EPS64,
        )


def test_relative_distance_and_conv_weights_as_matrices():
    w = random(16, 8, seed=11)
    assert metrics.relative_distance(w, w) == 0.0
    # 4w is exact in float32 and 4w - w = 3w exact in float64: only the two norms round
    assert metrics.relative_distance(4 * w, w) == pytest.approx(3.0, rel=2 * 128 * EPS64)
    assert math.isnan(metrics.relative_distance(w, torch.zeros_like(w)))
    conv = random(32, 1, 4, seed=12)  # a Mamba depthwise conv1d: one 4-tap kernel per channel
    assert metrics.as_matrix(conv).shape == (32, 4) and metrics.as_matrix(conv).dtype == torch.float64
    assert torch.equal(metrics.as_matrix(conv)[5], conv[5, 0].double())
    with pytest.raises(ValueError, match="2 or more dimensions"):
        metrics.spectral(torch.ones(4))
    assert set(metrics.vector_metrics(torch.ones(4))) == {"l2", "gini", "hoyer"}
    assert set(metrics.grad_metrics(torch.ones(4))) == {"l2"}
    assert set(metrics.grad_metrics(w)) == {"frobenius", "spectral", "nuclear"}


def test_every_parameter_of_llama_and_mamba_has_a_layer_and_component():
    from delphi.models import build_model

    llama = build_model({**MODEL, "num_hidden_layers": 2})
    names = named_components(llama)
    assert len(names) == len(list(llama.parameters()))
    per_layer = {
        "attn.q",
        "attn.k",
        "attn.v",
        "attn.o",
        "mlp.gate",
        "mlp.up",
        "mlp.down",
        "norm.attn",
        "norm.mlp",
    }
    for layer in (0, 1):
        assert {c for lay, c, _ in names if lay == layer} == per_layer
    assert [c for lay, c, _ in names if lay is None] == ["embedding", "norm.final", "lm_head"]
    assert len(blocks(llama)) == 2

    mamba = build_model(MAMBA_MODEL)  # ties its embeddings: the output head is the embedding, reported once
    assert mamba.config.tie_word_embeddings
    names = named_components(mamba)
    assert {c for lay, c, _ in names if lay == 1} == {
        "norm", "in_proj", "conv1d", "conv1d.bias", "x_proj", "dt_proj", "dt_proj.bias", "A_log", "D", "out_proj",
    }  # fmt: skip
    assert [c for lay, c, _ in names if lay is None] == ["embedding", "norm.final"]
    assert len(blocks(mamba)) == 2
    # an unknown parameter keeps its name, so another architecture still gets every row
    assert component_of("model.layers.3.block_sparse_moe.gate.weight") == (3, "block_sparse_moe.gate")
    assert component_of("transformer.wte.weight") == (None, "transformer.wte")
