"""delphi.mamba: every selective-scan path against transformers' own reference, and the plug-in around it.

The reference is transformers' PyTorch `mamba_selective_scan` (sequential) and the stock
`MambaForCausalLM`; the Triton kernels run under TRITON_INTERPRET=1 so they are checked without a GPU.
"""

from __future__ import annotations

import copy
import functools
import gc
import importlib
import json
import logging
import math
import os
import re
from pathlib import Path

import pytest
import torch
from numerics import EPS32, check, max_relative, record, summation_bound, worst_tensor_relative
from tiny import write_recipe
from transformers import AutoModelForCausalLM

from delphi.errors import DelphiError
from delphi.mamba import apply_scan_path, scan_function, scan_path_of, scan_paths_in_use, selfcheck
from delphi.mamba import paths as scan_paths
from delphi.mamba.chunked import MAX_CHUNK_DECAY, chunked_selective_scan, safe_chunk_size
from delphi.models import build_model
from delphi.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
NAMES = ("y", "du", "ddt", "dA", "dB", "dC", "dD", "dz", "dbias")
TINY_MAMBA = {
    "architecture": "MambaForCausalLM",
    "vocab_size": 384,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "state_size": 8,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}


def scan_inputs(batch, d_inner, seq_len, n, *, dt_shift=-2.0, dt_scale=1.0, seed=0):
    """Random scan arguments shaped as the mixer passes them (u, dt, z: b x d x l; B, C: b x n x l)."""
    g = torch.Generator().manual_seed(seed)
    u, z = (
        torch.randn(batch, d_inner, seq_len, generator=g),
        torch.randn(batch, d_inner, seq_len, generator=g),
    )
    dt = torch.randn(batch, d_inner, seq_len, generator=g) * dt_scale + dt_shift
    B, C = torch.randn(batch, n, seq_len, generator=g), torch.randn(batch, n, seq_len, generator=g)
    A = -torch.exp(torch.randn(d_inner, n, generator=g))
    D, bias = torch.randn(d_inner, generator=g), torch.randn(d_inner, generator=g) * 0.5
    return u, dt, A, B, C, D, z, bias


def run_scan(scan, inputs, dtype=torch.float32, **kwargs):
    """(y, *gradients w.r.t. every input) for a fixed random output gradient."""
    u, dt, A, B, C, D, z, bias = inputs
    leaves = [t.to(dtype).requires_grad_() for t in (u, dt, B, C, z)] + [
        t.clone().requires_grad_() for t in (A, D, bias)
    ]
    u, dt, B, C, z, A, D, bias = leaves
    y = scan(u, dt, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True, **kwargs)
    grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((y.float() * grad_out).sum(), leaves)
    by_input = dict(zip(("u", "dt", "B", "C", "z", "A", "D", "bias"), grads, strict=True))
    return [y] + [by_input[k] for k in ("u", "dt", "A", "B", "C", "D", "z", "bias")]


def relative_errors(results, reference) -> dict[str, float]:
    """Norm-wise relative error of each result (0 where both are exactly zero)."""
    errors = {}
    for name, x, r in zip(NAMES, results, reference, strict=True):
        diff, scale = (x.detach().double() - r.detach().double()).norm(), r.detach().double().norm()
        errors[name] = float(diff / scale) if scale > 0 else float(diff)
    return errors


def fp32_scan_bound(seq_len: int) -> float:
    """A float32 scan against the sequential one: the recurrence sums over seq_len positions in another
    order (summation_bound), and each position's softplus, exp and products round a few times: 1e-5
    (84 eps) where the sum's bound is smaller (measured: at most 1.3e-6 on any CPU kernel level)."""
    return max(1e-5, summation_bound(seq_len))


# bf16 inputs and outputs keep 8 bits of mantissa (eps 7.8e-3): rounding the output alone costs half an eps
# per number, and the paths round at different places: 4 bf16 eps (measured 3.2e-3, the output's rounding)
BF16_SCAN_BOUND = 4 * torch.finfo(torch.bfloat16).eps


def assert_close(results, reference, tolerance: float):
    """Every output of a scan within `tolerance` of the reference's, norm-wise relative (recorded: numerics.py)."""
    errors = relative_errors(results, reference)
    check("scan vs reference: worst output's norm-wise relative error", max(errors.values()), tolerance)


SHAPES = [
    pytest.param((2, 8, 37, 4), id="len-37-not-a-multiple-of-any-chunk"),
    pytest.param((1, 5, 64, 16), id="batch-1"),
    pytest.param((3, 4, 130, 16), id="len-130"),
    pytest.param((2, 6, 1, 3), id="len-1"),
]


@pytest.mark.numerics
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_chunked_scan_matches_the_reference_in_fp32(shape, chunk):
    inputs = scan_inputs(*shape)
    reference = run_scan(scan_function("reference"), inputs)
    assert_close(
        run_scan(chunked_selective_scan, inputs, chunk_size=chunk), reference, fp32_scan_bound(shape[2])
    )


@pytest.mark.numerics
def test_large_decays_shrink_the_chunk_and_stay_exact():
    inputs = scan_inputs(2, 8, 100, 16, dt_shift=0.0, dt_scale=20.0)  # some steps decay by e^-500
    u, dt, A, *_, bias = inputs
    delta = torch.nn.functional.softplus(dt + bias[:, None])
    assert safe_chunk_size(delta, A, 64) < 64
    assert safe_chunk_size(delta * 0 + 1e-6, A, 64) == 64
    assert safe_chunk_size(delta * 0 + 1e6, A, 64) == 1  # one step needs no rescaling: always safe
    window = safe_chunk_size(delta, A, 64) - 1
    sums = torch.nn.functional.pad(delta.cumsum(-1), (1, 0))
    if window:
        assert (
            float(((sums[..., window:] - sums[..., :-window]).amax((0, 2)) * A.abs().amax(1)).max())
            <= MAX_CHUNK_DECAY
        )
    reference = run_scan(scan_function("reference"), inputs)
    assert_close(run_scan(chunked_selective_scan, inputs), reference, fp32_scan_bound(100))


@pytest.mark.numerics
def test_bf16_matches_the_fp32_reference_within_bf16_rounding():
    """bf16 inputs and outputs (the scan itself runs in fp32): about 4e-3, as bf16's 8-bit mantissa allows."""
    shape = (2, 16, 70, 16)
    exact = scan_inputs(*shape)
    rounded = [t.to(torch.bfloat16).float() if t.dim() == 3 else t for t in exact]
    reference = run_scan(scan_function("reference"), rounded)
    ours = run_scan(chunked_selective_scan, rounded, dtype=torch.bfloat16)
    assert ours[0].dtype == torch.bfloat16
    assert_close(ours, reference, BF16_SCAN_BOUND)
    # transformers' own path in bf16 is no better
    stock = run_scan(scan_function("reference"), rounded, dtype=torch.bfloat16)
    assert max(relative_errors(ours, reference).values()) <= 2 * max(
        relative_errors(stock, reference).values()
    )


@pytest.mark.numerics
def test_final_state_matches_the_reference():
    inputs = scan_inputs(2, 6, 45, 8)
    u, dt, A, B, C, D, z, bias = inputs
    kwargs = dict(D=D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True)
    y_ref, state_ref = scan_function("reference")(u, dt, A, B, C, **kwargs)
    y, state = chunked_selective_scan(u, dt, A, B, C, chunk_size=16, **kwargs)
    # 45 steps of one recurrence summed in chunks of 16 instead of one by one (fp32_scan_bound)
    check(
        "chunked vs reference: final state, max|diff| / max|state|",
        max_relative(state, state_ref.float()),
        fp32_scan_bound(45),
    )
    check("chunked vs reference: output, max|diff| / max|y|", max_relative(y, y_ref), fp32_scan_bound(45))


# ---------------------------------------------------------------- precision against float64


def decaying_scan_inputs(batch, d_inner, seq_len, n, bias_shift, seed=0):
    """Scan arguments as a freshly initialized Mamba layer makes them (A_log = log 1..n, dt bias = the
    inverse softplus of 1e-3..1e-1), with the dt bias shifted by `bias_shift`: +6 gives dt of about 0.3
    to 4, channels that forget within a step or two. A is passed as A_log, the parameter trained."""
    g = torch.Generator().manual_seed(seed)

    def randn(*size):
        return torch.randn(*size, generator=g)

    u, z, dt = (
        randn(batch, d_inner, seq_len),
        randn(batch, d_inner, seq_len),
        randn(batch, d_inner, seq_len) / 2,
    )
    B, C = randn(batch, n, seq_len), randn(batch, n, seq_len)
    A_log = torch.log(torch.arange(1.0, n + 1))[None].expand(d_inner, n) + 0.1 * randn(d_inner, n)
    D = 1 + 0.1 * randn(d_inner)
    dt0 = torch.exp(torch.rand(d_inner, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    bias = dt0 + torch.log(-torch.expm1(-dt0)) + bias_shift
    return u, dt, A_log, B, C, D, z, bias


def run_scan_in(scan, inputs, dtype):
    """(y, *gradients w.r.t. u, dt, A_log, B, C, D, z, bias), every input and the arithmetic in `dtype`."""
    leaves = [t.to(dtype).requires_grad_() for t in inputs]
    u, dt, A_log, B, C, D, z, bias = leaves
    y = scan(u, dt, -torch.exp(A_log), B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)
    grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    by_input = dict(
        zip(
            ("u", "dt", "A", "B", "C", "D", "z", "bias"),
            torch.autograd.grad((y * grad_out).sum(), leaves),
            strict=True,
        )
    )
    return [y] + [by_input[k] for k in ("u", "dt", "A", "B", "C", "D", "z", "bias")]


def assert_within_twice_transformers_error(scan, inputs):
    """fp32 error of `scan` against float64 <= 2x the fp32 error of transformers' own sequential scan (+ eps), for
    the output and every gradient; the float64 reference is transformers' sequential scan run in float64."""
    reference = scan_function("reference")
    exact = run_scan_in(reference, inputs, torch.float64)
    theirs = relative_errors(run_scan_in(reference, inputs, torch.float32), exact)
    ours = relative_errors(run_scan_in(scan, inputs, torch.float32), exact)
    # An accuracy claim (no less accurate than transformers' own scan), so its margin is the factor 2 by design
    # (measured: at most 0.56 of the bound). + one float32 eps: below one rounding of the result no fp32
    # computation can be told from another, and
    # there which kernel (ATEN_CPU_CAPABILITY=default, avx2, ...) rounds last decides the ratio (seen: dB
    # 7.2e-8 against transformers' 3.4e-8 under `default`, for one step of one sequence)
    bound = {k: 2 * theirs[k] + EPS32 for k in NAMES}
    record("scan's fp32 error / (2 x transformers' + eps)", max(ours[k] / bound[k] for k in NAMES), 1.0)
    worse = {k: f"{ours[k]:.1e} vs transformers' {theirs[k]:.1e}" for k in NAMES if ours[k] > bound[k]}
    assert not worse, worse


@pytest.mark.numerics
# 256 channels where there is one step, so that the norm-wise error is over enough numbers not to be
# decided by a few roundings
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq_len", [1, 77, 129])
@pytest.mark.parametrize("bias_shift", [-6, 0, 3, 6, 9])
def test_chunked_scan_fp32_error_is_within_twice_transformers(bias_shift, seq_len, batch):
    inputs = decaying_scan_inputs(batch, 256 if seq_len == 1 else 64, seq_len, 16, bias_shift)
    assert_within_twice_transformers_error(chunked_selective_scan, inputs)


# ---------------------------------------------------------------- Triton, interpreted on the CPU


# Triton decides at import whether its own helpers (tl.sigmoid, ...) are interpreted, so each of these
# tests runs in a process started with TRITON_INTERPRET=1 (tests/conftest.py starts it for the test, and
# reports its result as the test's own).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def interpreted(test):
    return pytest.mark.slow(pytest.mark.triton_interpreted(test))  # a process of its own each: slow


if INTERPRETED:  # a real Triton function computing softplus 1% too large, for the self-check to catch
    import triton
    import triton.language as tl

    @triton.jit
    def softplus_one_percent_off(x):
        return 1.01 * tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(x)))


@pytest.fixture(scope="module")
def triton_scan():
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
    return importlib.import_module("delphi.mamba.triton_scan")


TRITON_SHAPES = [
    pytest.param((2, 8, 37, 4), id="len-37-not-a-multiple-of-the-chunk"),
    pytest.param((1, 40, 20, 16), id="batch-1-channels-not-a-multiple-of-the-block"),
    pytest.param((2, 3, 1, 5), id="len-1-state-not-a-power-of-two"),
]


@pytest.mark.numerics
@interpreted
@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_scan_matches_the_reference_in_fp32(triton_scan, shape):
    inputs = scan_inputs(*shape)
    reference = run_scan(scan_function("reference"), inputs)
    assert_close(run_scan(triton_scan.triton_selective_scan, inputs), reference, fp32_scan_bound(shape[2]))


@pytest.mark.numerics
@interpreted
def test_triton_scan_in_bf16_and_without_the_optional_inputs(triton_scan):
    shape = (2, 8, 21, 4)
    rounded = [t.to(torch.bfloat16).float() if t.dim() == 3 else t for t in scan_inputs(*shape)]
    assert_close(
        run_scan(triton_scan.triton_selective_scan, rounded, dtype=torch.bfloat16),
        run_scan(scan_function("reference"), rounded),
        BF16_SCAN_BOUND,
    )

    def bare(scan):  # no D, z, bias or softplus; with the final state
        u, dt, A, B, C, *_ = (t.clone().requires_grad_() for t in scan_inputs(*shape))
        y, state = scan(u, dt.abs(), A, B, C, return_last_state=True)
        return [y, state.float(), *torch.autograd.grad(y.sum(), (u, dt, A, B, C))]

    got, want = bare(triton_scan.triton_selective_scan), bare(scan_function("reference"))
    worst = max(
        float((a.double() - b.double()).norm() / b.double().norm()) for a, b in zip(got, want, strict=True)
    )
    check(
        "triton vs reference without the optional inputs: worst norm-wise relative error",
        worst,
        fp32_scan_bound(shape[2]),
    )


@pytest.mark.numerics
@interpreted
def test_triton_scan_path_in_a_model_matches_stock(triton_scan, fresh_self_check, caplog):
    stock = stock_model()
    ours = copy.deepcopy(stock)
    apply_scan_path(ours, "triton")
    with caplog.at_level(logging.INFO, logger="delphi.mamba"):
        compare_models(
            stock, ours, torch.randint(3, 384, (2, 19), generator=torch.Generator().manual_seed(0))
        )
    assert scan_paths_in_use(ours) == {"cpu/float32": "triton"}  # the kernels passed their self-check
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.numerics
@interpreted
def test_triton_scan_fp32_error_is_within_twice_transformers(triton_scan):
    """The backward kernel sums gA, gD and the dt bias's gradient per chunk, then over chunks: one running
    sum over the sequence was 2x transformers' error here."""
    inputs = decaying_scan_inputs(2, 32, 129, 16, bias_shift=6)
    assert_within_twice_transformers_error(triton_scan.triton_selective_scan, inputs)


@pytest.fixture
def fresh_self_check(monkeypatch):
    """Forget earlier self-check verdicts and log lines, so that this test's first use checks again."""
    monkeypatch.setattr(selfcheck, "_verdicts", {})
    monkeypatch.setattr(scan_paths, "_warned", set())
    monkeypatch.setattr(scan_paths, "_logged", set())


def assert_falls_back_to_chunked(caplog, reason: str):
    """A Triton-path model whose kernels fail their self-check warns once, runs (and records) the chunked
    scan, and gives exactly the chunked path's logits and gradients."""
    stock = stock_model()
    ours, chunked = copy.deepcopy(stock), copy.deepcopy(stock)
    apply_scan_path(ours, "triton")
    apply_scan_path(chunked, "chunked")
    tokens = torch.randint(3, 384, (2, 19), generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger="delphi.mamba"):
        compare_models(chunked, ours, tokens, tolerance=0)
        ours(input_ids=tokens)  # a second use: no second check, no second warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "failed their self-check on cpu for float32" in warnings[0], warnings
    assert re.search(reason, warnings[0]), warnings[0]
    used = scan_paths_in_use(ours)
    assert list(used) == ["cpu/float32"] and used["cpu/float32"].startswith(
        "chunked (triton failed its self-check"
    )
    assert "Mamba selective scan on cpu: chunked" in caplog.text


@interpreted
def test_triton_scan_that_computes_wrong_values_falls_back_to_chunked(
    triton_scan, fresh_self_check, monkeypatch, caplog
):
    monkeypatch.setattr(triton_scan, "_softplus", softplus_one_percent_off)  # a real, wrong kernel
    assert_falls_back_to_chunked(
        caplog, r"differs from the chunked scan's by [0-9.e-]+ \(relative; tolerance 0.0001\)"
    )


@interpreted
def test_triton_scan_that_fails_to_compile_falls_back_to_chunked(
    triton_scan, fresh_self_check, monkeypatch, caplog
):
    monkeypatch.setattr(triton_scan, "BLOCK_D", 24)  # tl.arange needs a power of two: a real compile error
    assert_falls_back_to_chunked(caplog, "power of 2")


# ---------------------------------------------------------------- the plug-in


def test_self_check_catches_a_broken_or_crashing_scan():
    """The comparison the Triton kernels go through on first use, given deliberately broken scans."""

    def off_by(factor):
        def scan(*args, **kwargs):
            return chunked_selective_scan(*args, **kwargs) * factor

        return scan

    def crashes(*args, **kwargs):
        raise RuntimeError("CompilationError: at 12:4: unsupported\nmore detail")

    cpu = torch.device("cpu")
    assert selfcheck.check_scan(off_by(1.0), cpu, torch.float32, 16) is None
    assert (
        selfcheck.check_scan(functools.partial(chunked_selective_scan, chunk_size=1), cpu, torch.float32, 5)
        is None
    )
    assert "output differs from the chunked scan's" in selfcheck.check_scan(
        off_by(1.001), cpu, torch.float32, 16
    )
    assert selfcheck.check_scan(off_by(1.001), cpu, torch.bfloat16, 16) is None  # within bf16's tolerance
    assert "output is not finite" in selfcheck.check_scan(off_by(float("nan")), cpu, torch.float32, 16)
    assert (
        selfcheck.check_scan(crashes, cpu, torch.float32, 16)
        == "RuntimeError: CompilationError: at 12:4: unsupported"
    )
    with torch.inference_mode():  # a first use while generating
        assert selfcheck.check_scan(off_by(1.0), cpu, torch.float32, 16) is None
        assert "output differs" in selfcheck.check_scan(off_by(1.001), cpu, torch.float32, 16)
    state = torch.random.get_rng_state()
    selfcheck.check_scan(off_by(1.0), cpu, torch.float32, 16)
    assert torch.equal(torch.random.get_rng_state(), state)  # the run's random stream is left alone


def compare_models(stock, ours, tokens, tolerance=1e-5, what="scan path vs stock"):
    """Same logits and same gradient for every parameter, each within `tolerance` of its size."""
    out_stock, out_ours = stock(input_ids=tokens, labels=tokens), ours(input_ids=tokens, labels=tokens)
    out_stock.loss.backward()
    out_ours.loss.backward()
    check(
        f"{what}: logits, max|diff| / max|logit|", max_relative(out_ours.logits, out_stock.logits), tolerance
    )
    grads_ours = {name: q.grad for name, q in ours.named_parameters()}
    grads_stock = {name: p.grad for name, p in stock.named_parameters()}
    worst = worst_tensor_relative(grads_ours, grads_stock)
    check(f"{what}: gradients, worst tensor's relative L2", worst, tolerance)


def stock_model(seed=0):
    """A stock transformers Mamba (sequential scan: use_mambapy off), not touched by delphi."""
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(seed)
    kwargs = {k: v for k, v in TINY_MAMBA.items() if k != "architecture"}
    return MambaForCausalLM(MambaConfig(**kwargs, use_mambapy=False))


@pytest.mark.numerics
@pytest.mark.parametrize("path", ["chunked", "reference", "mambapy", "auto"])
def test_each_cpu_path_gives_the_stock_models_logits_and_gradients(path):
    if path == "mambapy":
        pytest.importorskip("mambapy")
    stock = stock_model()
    ours = copy.deepcopy(stock)
    assert apply_scan_path(ours, path) == 2
    assert scan_path_of(ours) == path and scan_path_of(stock) is None
    compare_models(stock, ours, torch.randint(3, 384, (3, 45), generator=torch.Generator().manual_seed(0)))


def test_the_plug_in_leaves_weights_config_and_state_dict_alone():
    plain = build_model(TINY_MAMBA, seed=5, mamba_scan="reference")
    chunked = build_model(TINY_MAMBA, seed=5, mamba_scan="chunked")
    untouched = stock_model()
    assert chunked.config.to_dict() == plain.config.to_dict()
    assert "scan_path" not in chunked.config.to_dict()
    assert list(chunked.state_dict()) == list(untouched.state_dict())
    for (name, a), (_, b) in zip(chunked.state_dict().items(), plain.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert sum(1 for _ in chunked.parameters()) == sum(1 for _ in untouched.parameters())


@pytest.mark.numerics
def test_generation_with_the_cache_matches_stock():
    stock = stock_model().eval()
    ours = copy.deepcopy(stock)
    apply_scan_path(ours, "chunked")
    prompt = torch.randint(3, 384, (2, 11), generator=torch.Generator().manual_seed(3))
    kwargs = dict(max_new_tokens=9, do_sample=False, attention_mask=torch.ones_like(prompt), pad_token_id=2)
    assert torch.equal(ours.generate(prompt, **kwargs), stock.generate(prompt, **kwargs))


def test_the_path_in_use_is_logged(caplog, monkeypatch):
    monkeypatch.setattr(scan_paths, "_logged", set())
    with caplog.at_level(logging.INFO, logger="delphi.mamba"):
        model = build_model(TINY_MAMBA, seed=0)
        assert "Mamba selective scan: chunked" in caplog.text and "(mamba_scan: auto)" in caplog.text
        model(input_ids=torch.randint(3, 384, (1, 8)))
    assert "Mamba selective scan on cpu: chunked" in caplog.text


def test_llama_models_are_left_alone():
    section = {
        "architecture": "LlamaForCausalLM",
        "vocab_size": 64,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
    }
    assert scan_path_of(build_model(section, seed=0, mamba_scan="chunked")) is None


def test_unknown_or_unavailable_paths_are_delphi_errors(monkeypatch):
    with pytest.raises(DelphiError, match="unknown mamba_scan 'fast'.*auto, cuda-kernels, triton"):
        build_model(TINY_MAMBA, seed=0, mamba_scan="fast")
    if importlib.util.find_spec("mamba_ssm") is None:
        with pytest.raises(DelphiError, match="mamba_scan 'cuda-kernels' cannot run here: mamba-ssm"):
            build_model(TINY_MAMBA, seed=0, mamba_scan="cuda-kernels")
    if not torch.cuda.is_available():
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(DelphiError, match="mamba_scan 'triton' cannot run here"):
            build_model(TINY_MAMBA, seed=0, mamba_scan="triton")


def test_the_recipe_option_is_validated(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        "model: {architecture: MambaForCausalLM, vocab_size: 384, hidden_size: 16, num_hidden_layers: 2}\n"
        "tokenizer: tok\ndata: {path: data}\nseq_len: 32\nbatch_size: 8\n"
    )
    assert load_recipe([recipe_file]).mamba_scan == "auto"
    assert load_recipe([recipe_file], ["mamba_scan=chunked"]).mamba_scan == "chunked"
    with pytest.raises(
        DelphiError, match=r"mamba_scan in --set mamba_scan=fast is 'fast'; expected one of 'auto'"
    ):
        load_recipe([recipe_file], ["mamba_scan=fast"])


@pytest.mark.numerics
def test_delphis_forward_is_transformers_forward_with_only_the_scan_swapped(caplog):
    """Fails when a transformers release changes MambaMixer.forward in a way delphi's copy of it (mixer.py)
    does not follow: the reference path runs the same sequential PyTorch scan as the stock model, so
    training (logits, every gradient) and generation with the cache (every step's scores) agree to 1e-6,
    and delphi's scan must be the one that ran. transformers' module itself is left as it was."""
    from transformers.models.mamba import modeling_mamba

    scan_before, forward_before = modeling_mamba.mamba_selective_scan, modeling_mamba.MambaMixer.forward
    stock = stock_model()
    ours = copy.deepcopy(stock)
    apply_scan_path(ours, "reference")
    tokens = torch.randint(3, 384, (3, 45), generator=torch.Generator().manual_seed(0))
    # the same sequential scan and the same ops in the same order: a difference would be a changed forward
    compare_models(stock, ours, tokens, tolerance=1e-6, what="reference path vs stock")
    assert scan_paths_in_use(ours) == {"cpu/float32": "reference"}  # delphi's dispatch ran the scan

    stock.eval(), ours.eval()
    prompt = tokens[:2, :11]
    kwargs = dict(max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(prompt), pad_token_id=2)
    kwargs.update(output_scores=True, return_dict_in_generate=True)
    gen_stock, gen_ours = stock.generate(prompt, **kwargs), ours.generate(prompt, **kwargs)
    assert torch.equal(gen_ours.sequences, gen_stock.sequences)
    worst = max(max_relative(a, b) for a, b in zip(gen_ours.scores, gen_stock.scores, strict=True))
    check("reference path vs stock: generation scores, max|diff| / max|score|", worst, 1e-6)

    assert modeling_mamba.mamba_selective_scan is scan_before
    assert modeling_mamba.MambaMixer.forward is forward_before
    assert all("forward" not in vars(m) for m in stock.modules())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_transformers_forward_delphi_cannot_plug_into_falls_back_to_it(monkeypatch, caplog):
    """If forward stopped calling the scan by its name, the copy cannot be made: one warning, and the
    model runs transformers' own forward (correct, slow) rather than failing or silently skipping the scan."""
    from delphi.mamba import mixer

    monkeypatch.setattr(mixer, "SCAN_NAME", "a_name_forward_does_not_call")
    monkeypatch.setattr(scan_paths, "_logged", set())
    scan_paths._plugged_forward.cache_clear()
    try:
        with pytest.raises(mixer.IncompatibleForward, match="no longer calls a_name_forward_does_not_call"):
            mixer.forward_with_scan(chunked_selective_scan)
        stock = stock_model()
        ours = copy.deepcopy(stock)
        apply_scan_path(ours, "chunked")
        with caplog.at_level(logging.INFO, logger="delphi.mamba"):
            compare_models(
                stock, ours, torch.randint(3, 384, (2, 9), generator=torch.Generator().manual_seed(0))
            )
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "cannot be plugged into this transformers" in warnings[0]
        assert scan_paths_in_use(ours)["cpu/float32"].startswith(
            "transformers (delphi's scan cannot be plugged"
        )
    finally:
        scan_paths._plugged_forward.cache_clear()


def test_scan_paths_in_use_names_the_scan_that_ran(monkeypatch):
    model = build_model(TINY_MAMBA, seed=0, mamba_scan="auto")
    assert scan_paths_in_use(model) == {}
    model(input_ids=torch.randint(3, 384, (1, 8)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=torch.randint(3, 384, (1, 8)))
    assert scan_paths_in_use(model) == {"cpu/bfloat16": "chunked", "cpu/float32": "chunked"}
    assert scan_paths_in_use(copy.deepcopy(model)) == scan_paths_in_use(model)
    assert scan_paths_in_use(stock_model()) == {}


def test_tied_keys_filter_drops_only_keys_that_are_tied():
    from transformers import LlamaConfig, LlamaForCausalLM

    from delphi.quiet import TiedKeysFilter

    def passes(f, keys):
        message = f"There were missing keys in the checkpoint model loaded: {keys}."
        return f.filter(logging.makeLogRecord({"msg": message, "levelno": logging.WARNING}))

    tied_filter = TiedKeysFilter()
    assert passes(tied_filter, ["lm_head.weight"])  # nothing registered: nothing known to be tied
    mamba = stock_model()
    tied_filter.register(mamba)  # tie_word_embeddings: lm_head.weight is backbone.embeddings.weight
    assert not passes(tied_filter, ["lm_head.weight"])
    assert passes(tied_filter, ["lm_head.weight", "backbone.norm_f.weight"])  # one key really missing
    assert tied_filter.filter(logging.makeLogRecord({"msg": "There were unexpected keys: ['x']."}))
    untied = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                         num_hidden_layers=1, tie_word_embeddings=False)  # fmt: skip
    llama = LlamaForCausalLM(untied)
    tied_filter.register(llama)  # a model whose lm_head.weight is its own: say it again
    assert passes(tied_filter, ["lm_head.weight"])
    del llama  # models no longer alive do not count
    gc.collect()
    assert not passes(tied_filter, ["lm_head.weight"])


# ---------------------------------------------------------------- end to end


@pytest.mark.numerics
@pytest.mark.slow
def test_a_run_trained_with_the_chunked_scan_saves_a_plain_checkpoint(
    stories_data, tmp_path, caplog, monkeypatch
):
    """Trained through delphi.train with mamba_scan: chunked; loads with plain transformers, same logits."""
    from delphi.layout import list_checkpoints
    from delphi.train.run import train

    monkeypatch.setattr(scan_paths, "_logged", set())
    out = tmp_path / "run"
    recipe_path = write_recipe(
        tmp_path / "r.yaml",
        stories_data,
        out,
        model=TINY_MAMBA,
        mamba_scan="chunked",
        checkpoints={"every": 4, "steps": []},
        **{"training.max_steps": 4},
    )
    with caplog.at_level(logging.INFO, logger="delphi.mamba"):
        summary = train(load_recipe([recipe_path]))
    assert "Mamba selective scan on cpu: chunked" in caplog.text
    assert summary["checkpoints"] == [4]
    folder = list_checkpoints(out)[-1][1]
    context = json.loads((folder / "run_context.json").read_text())
    assert context["mamba_scan"] == {"cpu/float32": "chunked"}  # the scan that really ran

    plain = AutoModelForCausalLM.from_pretrained(folder)  # what anyone without delphi gets
    assert type(plain).__name__ == "MambaForCausalLM" and scan_path_of(plain) is None
    assert all("forward" not in vars(m) for m in plain.modules())
    reference = copy.deepcopy(plain)
    apply_scan_path(reference, "reference")
    tokens = torch.randint(3, 384, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = reference(tokens).logits
        check("loaded checkpoint vs reference scan: logits", max_relative(plain(tokens).logits, want), 1e-5)
    trained = build_model(TINY_MAMBA, mamba_scan="chunked")
    trained.load_state_dict(plain.state_dict())
    with torch.no_grad():
        check("chunked scan vs reference scan: logits", max_relative(trained(tokens).logits, want), 1e-5)


def test_a_mamba_run_and_its_resume_say_nothing_about_kernels_or_tied_keys(
    stories_data, tmp_path, caplog, capfd, monkeypatch
):
    """A tiny Mamba run trained with DelphiTrainer, then resumed: transformers' 'causal_conv1d / mamba_ssm
    is not installed' and "missing keys ['lm_head.weight']" are gone; delphi's line naming the scan stays."""
    from delphi.train.run import train

    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: let it warn again here
    monkeypatch.setattr(scan_paths, "_logged", set())
    keep = {"checkpoints": {"every": 2, "steps": [], "keep_optimizer": "all"}, "training.max_steps": 4}
    first = write_recipe(tmp_path / "a.yaml", stories_data, tmp_path / "a", model=TINY_MAMBA, **keep)
    resumed = write_recipe(
        tmp_path / "b.yaml", stories_data, tmp_path / "b", model=TINY_MAMBA, resume=str(tmp_path / "a" / "step2"),
        **keep,
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        train(load_recipe([first]))
        assert train(load_recipe([resumed]))["checkpoints"] == [4]
    said = caplog.text + capfd.readouterr().err
    assert "Mamba selective scan on cpu: chunked" in caplog.text and "resuming from" in caplog.text
    assert "is not installed" not in said and "falling back" not in said
    assert "missing keys" not in said
    a, b = (AutoModelForCausalLM.from_pretrained(tmp_path / run / "step4") for run in ("a", "b"))
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name  # the resumed run is the same run, lm_head tied as before
