"""delphi.mamba: every selective-scan path against transformers' own reference, and the plug-in around it.

The reference is transformers' PyTorch `mamba_selective_scan` (sequential) and the stock
`MambaForCausalLM`; the Triton kernels run under TRITON_INTERPRET=1 so they are checked without a GPU.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import write_recipe
from transformers import AutoModelForCausalLM

from delphi.errors import DelphiError
from delphi.mamba import apply_scan_path, scan_function, scan_path_of
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


def assert_close(results, reference, tolerance: float):
    errors = relative_errors(results, reference)
    assert max(errors.values()) < tolerance, errors


SHAPES = [
    pytest.param((2, 8, 37, 4), id="len-37-not-a-multiple-of-any-chunk"),
    pytest.param((1, 5, 64, 16), id="batch-1"),
    pytest.param((3, 4, 130, 16), id="len-130"),
    pytest.param((2, 6, 1, 3), id="len-1"),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_chunked_scan_matches_the_reference_in_fp32(shape, chunk):
    inputs = scan_inputs(*shape)
    reference = run_scan(scan_function("reference"), inputs)
    assert_close(run_scan(chunked_selective_scan, inputs, chunk_size=chunk), reference, 1e-5)


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
    assert_close(run_scan(chunked_selective_scan, inputs), reference, 1e-5)


def test_bf16_matches_the_fp32_reference_within_bf16_rounding():
    """bf16 inputs and outputs (the scan itself runs in fp32): about 4e-3, as bf16's 8-bit mantissa allows."""
    shape = (2, 16, 70, 16)
    exact = scan_inputs(*shape)
    rounded = [t.to(torch.bfloat16).float() if t.dim() == 3 else t for t in exact]
    reference = run_scan(scan_function("reference"), rounded)
    ours = run_scan(chunked_selective_scan, rounded, dtype=torch.bfloat16)
    assert ours[0].dtype == torch.bfloat16
    assert_close(ours, reference, 1e-2)
    # transformers' own path in bf16 is no better
    stock = run_scan(scan_function("reference"), rounded, dtype=torch.bfloat16)
    assert max(relative_errors(ours, reference).values()) <= 2 * max(
        relative_errors(stock, reference).values()
    )


def test_final_state_matches_the_reference():
    inputs = scan_inputs(2, 6, 45, 8)
    u, dt, A, B, C, D, z, bias = inputs
    kwargs = dict(D=D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True)
    y_ref, state_ref = scan_function("reference")(u, dt, A, B, C, **kwargs)
    y, state = chunked_selective_scan(u, dt, A, B, C, chunk_size=16, **kwargs)
    torch.testing.assert_close(state, state_ref.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- Triton, interpreted on the CPU


# Triton decides at import whether its own helpers (tl.sigmoid, ...) are interpreted, so the kernels are
# tested in a process started with TRITON_INTERPRET=1: test_triton_kernels_under_the_interpreter starts it.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 subprocess")


@pytest.fixture(scope="module")
def triton_scan():
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
    return importlib.import_module("delphi.mamba.triton_scan")


@pytest.mark.slow
def test_triton_kernels_under_the_interpreter():
    if INTERPRETED:
        pytest.skip("this is the interpreted run")
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "triton_scan_"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert re.search(rf"\b{TRITON_TESTS} passed\b", output) and "skipped" not in output, output[-2000:]


TRITON_TESTS = 5  # the interpreted tests below, all named test_triton_scan_*
TRITON_SHAPES = [
    pytest.param((2, 8, 37, 4), id="len-37-not-a-multiple-of-the-chunk"),
    pytest.param((1, 40, 20, 16), id="batch-1-channels-not-a-multiple-of-the-block"),
    pytest.param((2, 3, 1, 5), id="len-1-state-not-a-power-of-two"),
]


@interpreted
@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_scan_matches_the_reference_in_fp32(triton_scan, shape):
    inputs = scan_inputs(*shape)
    reference = run_scan(scan_function("reference"), inputs)
    assert_close(run_scan(triton_scan.triton_selective_scan, inputs), reference, 1e-5)


@interpreted
def test_triton_scan_in_bf16_and_without_the_optional_inputs(triton_scan):
    shape = (2, 8, 21, 4)
    rounded = [t.to(torch.bfloat16).float() if t.dim() == 3 else t for t in scan_inputs(*shape)]
    assert_close(
        run_scan(triton_scan.triton_selective_scan, rounded, dtype=torch.bfloat16),
        run_scan(scan_function("reference"), rounded),
        1e-2,
    )

    def bare(scan):  # no D, z, bias or softplus; with the final state
        u, dt, A, B, C, *_ = (t.clone().requires_grad_() for t in scan_inputs(*shape))
        y, state = scan(u, dt.abs(), A, B, C, return_last_state=True)
        return [y, state.float(), *torch.autograd.grad(y.sum(), (u, dt, A, B, C))]

    for got, want in zip(
        bare(triton_scan.triton_selective_scan), bare(scan_function("reference")), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@interpreted
def test_triton_scan_path_in_a_model_matches_stock(triton_scan):
    stock = stock_model()
    ours = copy.deepcopy(stock)
    apply_scan_path(ours, "triton")
    compare_models(stock, ours, torch.randint(3, 384, (2, 19), generator=torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------- the plug-in


def compare_models(stock, ours, tokens, tolerance=1e-5):
    """Same logits and same gradient for every parameter."""
    out_stock, out_ours = stock(input_ids=tokens, labels=tokens), ours(input_ids=tokens, labels=tokens)
    out_stock.loss.backward()
    out_ours.loss.backward()
    torch.testing.assert_close(out_ours.logits, out_stock.logits, rtol=1e-5, atol=1e-5)
    for (name, p), (_, q) in zip(stock.named_parameters(), ours.named_parameters(), strict=True):
        error = float((q.grad - p.grad).norm() / p.grad.norm())
        assert error < tolerance, (name, error)


def stock_model(seed=0):
    """A stock transformers Mamba (sequential scan: use_mambapy off), not touched by delphi."""
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(seed)
    kwargs = {k: v for k, v in TINY_MAMBA.items() if k != "architecture"}
    return MambaForCausalLM(MambaConfig(**kwargs, use_mambapy=False))


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


# ---------------------------------------------------------------- end to end


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

    plain = AutoModelForCausalLM.from_pretrained(folder)  # what anyone without delphi gets
    assert type(plain).__name__ == "MambaForCausalLM" and scan_path_of(plain) is None
    assert all("forward" not in vars(m) for m in plain.modules())
    reference = copy.deepcopy(plain)
    apply_scan_path(reference, "reference")
    tokens = torch.randint(3, 384, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens).logits, reference(tokens).logits, rtol=1e-5, atol=1e-5)
    trained = build_model(TINY_MAMBA, mamba_scan="chunked")
    trained.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(trained(tokens).logits, reference(tokens).logits, rtol=1e-5, atol=1e-5)
