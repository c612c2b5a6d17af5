"""The FLOPs formulas against torch's own FLOP counter on real training steps, the peak table, and `mfu`
in the training log."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import MODEL, training_args
from torch.utils.flop_counter import FlopCounterMode

from delphi.errors import DelphiError
from delphi.models import build_model
from delphi.train.flops import (
    PEAK_FLOPS_ENV,
    flops_per_token,
    llama_flops_per_token,
    lookup_peak_flops,
    mamba_flops_per_token,
    mamba_forward_flops_per_token,
    mfu_inputs,
    peak_flops_env,
)

LLAMA_GQA = MODEL  # tests/tiny.py's model: grouped-query attention, one layer
LLAMA_100K = {  # recipes/stories/llama2-100k.yaml's shape at the suite's vocab and context
    "architecture": "LlamaForCausalLM",
    "vocab_size": 4096,
    "hidden_size": 12,
    "intermediate_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_hidden_layers": 1,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
LLAMA_DEEP = {  # attention-heavy: the 12 L H h T term is half the total
    "architecture": "LlamaForCausalLM",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_hidden_layers": 3,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}


def counted_training_step(model, seq_len: int, batch: int = 2) -> FlopCounterMode:
    """FLOPs torch counts for one optimizer step (forward, backward, AdamW update) on `batch` sequences."""
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return counter


@pytest.mark.parametrize(
    "model_section,seq_len",
    [(LLAMA_GQA, 32), (LLAMA_100K, 512), (LLAMA_DEEP, 256)],
    ids=["gqa", "100k", "deep"],
)
def test_llama_formula_within_10_percent_of_flop_counter(model_section, seq_len):
    # eager attention: FlopCounterMode does not count PyTorch's CPU SDPA kernel (it does count the CUDA ones)
    model = build_model({**model_section, "attn_implementation": "eager"}, seed=0)
    counted = counted_training_step(model, seq_len).get_total_flops()
    formula = llama_flops_per_token(model.config, seq_len) * 2 * seq_len
    assert formula == pytest.approx(counted, rel=0.10)
    assert formula == pytest.approx(counted, rel=1e-6)  # in fact exact: both count every matrix product
    # N is the weights of every linear layer (lm_head included, tied or not); the input embedding is not
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 12 * model.config.num_hidden_layers * model.config.num_attention_heads * model.config.head_dim
    assert llama_flops_per_token(model.config, seq_len) == 6 * linear + attention * seq_len


MAMBA = {
    "architecture": "MambaForCausalLM",
    "vocab_size": 512,
    "hidden_size": 32,
    "state_size": 16,
    "expand": 2,
    "conv_kernel": 4,
    "num_hidden_layers": 2,
}


def test_mamba_formula_against_flop_counter():
    """What FlopCounterMode can check of Mamba's formula, on a real training step.

    It counts matrix products and convolutions, so it sees in_proj, x_proj, out_proj and lm_head (each a
    module call: checked forward + backward) and conv1d (a functional call inside the mixer; checked
    forward only: for this depthwise convolution's backward it counts ~65x the forward, ignoring the
    groups). dt_proj is a bare `weight @ x` batched with the scan's own products, and the scan's
    elementwise work (8 E S per token) is invisible to it, so those two are the formula's alone.
    """
    seq_len, batch = 64, 2
    model = build_model(MAMBA, seed=0, mamba_scan="chunked")
    by_module = counted_training_step(model, seq_len, batch).get_flop_counts()
    parts = mamba_forward_flops_per_token(model.config)
    tokens = batch * seq_len
    for part in ("in_proj", "x_proj", "out_proj", "lm_head"):
        counted = sum(sum(ops.values()) for name, ops in by_module.items() if name.split(".")[-1] == part)
        assert counted > 0 and 3 * parts[part] * tokens == pytest.approx(counted, rel=0.10), part
    conv_forward = sum(
        count
        for name, ops in by_module.items()
        if name.split(".")[-1] == "mixer"
        for op, count in ops.items()
        if str(op) == "aten.convolution"
    )
    assert parts["conv1d"] * tokens == pytest.approx(conv_forward, rel=0.10)  # (+K-1 padded outputs: 5%)
    config = model.config
    e, s = config.intermediate_size, config.state_size
    assert parts["scan"] == config.num_hidden_layers * 8 * e * s
    assert parts["dt_proj"] == config.num_hidden_layers * 2 * config.time_step_rank * e
    assert 0.1 < 3 * parts["scan"] / mamba_flops_per_token(config) < 0.5  # not negligible: ~1/5 here
    assert flops_per_token(config, seq_len) == mamba_flops_per_token(config) == 3 * sum(parts.values())


def test_peak_table_matches_device_names():
    cases = {
        ("NVIDIA H100 80GB HBM3", "bf16"): 989.4e12,
        ("NVIDIA H100 PCIe", "bf16"): 756e12,
        ("NVIDIA H100 NVL", "tf32"): 417.5e12,
        ("NVIDIA H200", "bf16"): 989.4e12,
        ("NVIDIA A100-SXM4-80GB", "bf16"): 312e12,
        ("NVIDIA A100 80GB PCIe", "fp32"): 19.5e12,
        ("NVIDIA A10G", "bf16"): 125e12,
        ("NVIDIA L4", "bf16"): 121e12,
        ("NVIDIA L40S", "bf16"): 366e12,
        ("NVIDIA GeForce RTX 4090", "bf16"): 165.2e12,
        ("NVIDIA GeForce RTX 3090", "tf32"): 35.6e12,
        ("Tesla V100-SXM2-16GB", "fp16"): 125e12,
        ("Tesla V100-PCIE-32GB", "fp16"): 112e12,
        ("Tesla T4", "fp32"): 8.1e12,
    }
    for (name, precision), peak in cases.items():
        assert lookup_peak_flops(name, precision) == pytest.approx(peak), name
    assert lookup_peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 tensor cores
    assert lookup_peak_flops("Some Future GPU", "bf16") is None


def test_peak_flops_override(monkeypatch):
    args = training_args("unused")
    model = build_model(LLAMA_GQA, seed=0)
    monkeypatch.delenv(PEAK_FLOPS_ENV, raising=False)
    assert mfu_inputs(model, args, 32) == (llama_flops_per_token(model.config, 32), None)  # CPU: no peak
    monkeypatch.setenv(PEAK_FLOPS_ENV, "2.5e12")
    assert mfu_inputs(model, args, 32)[1] == 2.5e12 * args.world_size
    for bad in ("fast", "-1", "0", "inf"):
        monkeypatch.setenv(PEAK_FLOPS_ENV, bad)
        with pytest.raises(DelphiError, match=f"{PEAK_FLOPS_ENV}='{bad}' must be a positive number"):
            peak_flops_env()


@pytest.mark.slow
@pytest.mark.parametrize("peak", ["1e12", None])
def test_mfu_logged_next_to_tokens_per_second(stories_data, tmp_path, monkeypatch, peak):
    from tiny import write_recipe

    from delphi.recipe import load_recipe
    from delphi.train.run import train

    if peak:
        monkeypatch.setenv(PEAK_FLOPS_ENV, peak)
    else:
        monkeypatch.delenv(PEAK_FLOPS_ENV, raising=False)
    path = write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "run", checkpoints={"steps": []})
    recipe = load_recipe([path], ["training.max_steps=3"])
    train(recipe)
    history = json.loads((tmp_path / "run" / "step3" / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if "tokens_per_second" in entry]
    assert len(logged) >= 2
    per_token = llama_flops_per_token(build_model(recipe.model, seed=0).config, recipe.seq_len)
    for entry in logged:
        if peak:
            assert entry["mfu"] == pytest.approx(entry["tokens_per_second"] * per_token / 1e12, rel=1e-9)
        else:
            assert "mfu" not in entry
