"""Model building: seeded init, meta builds, parameter counts, the suite's hyperparameters, Mamba paths."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from numerics import check, summation_bound

from delphi.errors import DelphiError
from delphi.models import build_model, check_vocab, count_parameters
from delphi.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
STORIES = REPO / "recipes/stories"

# The original delphi suite's model table, copied literally.
LLAMA2_TABLE = """
50k (6,16,3,1,1); 100k (12,32,2,1,1); 250k (28,75,2,2,1); 500k (56,149,4,2,2); 1m (84,244,6,4,3);
2.5m (160,426,8,4,4); 5m (240,640,10,5,5); 10m (340,907,10,6,5); 25m (480,1280,16,8,8); 50m (704,1877,16,8,8)
"""
LLAMA2_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
)
MAMBA_TABLE = """
50k (12,2); 100k (24,2); 250k (36,4); 500k (76,4); 1m (112,6); 2.5m (204,6); 5m (308,6); 10m (400,8);
25m (664,8); 50m (952,8)
"""
MAMBA_KEYS = ("hidden_size", "num_hidden_layers")
LLAMA2_BASE = dict(
    vocab_size=4096,
    hidden_act="silu",
    max_position_embeddings=512,
    initializer_range=0.02,
    rms_norm_eps=1e-6,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=2,
    tie_word_embeddings=False,
    attention_bias=False,
    attention_dropout=0.0,
    mlp_bias=False,
)
MAMBA_BASE = dict(
    vocab_size=4096,
    state_size=16,
    layer_norm_epsilon=1e-5,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=2,
    expand=2,
    conv_kernel=4,
    use_bias=False,
    use_conv_bias=True,
    hidden_act="silu",
    initializer_range=0.1,
    residual_in_fp32=True,
    rescale_prenorm_residual=True,
)


def parse_table(text: str, keys: tuple[str, ...]) -> dict[str, dict[str, int]]:
    rows = {}
    for entry in text.replace("\n", " ").split(";"):
        size, numbers = entry.strip().split(" ", 1)
        rows[size] = dict(zip(keys, map(int, numbers.strip("() ").split(",")), strict=True))
    return rows


def nominal(size: str) -> float:
    return float(size[:-1]) * {"k": 1e3, "m": 1e6}[size[-1]]


def model_section(name: str) -> dict:
    return load_recipe([STORIES / f"{name}.yaml"]).model


def test_the_same_seed_gives_identical_weights_and_another_seed_differs():
    section = model_section("llama2-100k")
    first = build_model(section, seed=7).state_dict()
    again = build_model(section, seed=7).state_dict()
    other = build_model(section, seed=8).state_dict()
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(
        first["model.layers.0.self_attn.q_proj.weight"], other["model.layers.0.self_attn.q_proj.weight"]
    )


def test_mamba_init_is_seeded_too():
    section = model_section("mamba-50k")
    first, again = build_model(section, seed=3).state_dict(), build_model(section, seed=3).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = build_model(section, seed=4).state_dict()
    assert not torch.equal(
        first["backbone.layers.0.mixer.in_proj.weight"], other["backbone.layers.0.mixer.in_proj.weight"]
    )


@pytest.mark.parametrize("name", ["llama2-50m", "mamba-50m"])
def test_meta_build_allocates_no_storage(name):
    model = build_model(model_section(name), device="meta")
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and all(t.is_meta for t in tensors)
    assert count_parameters(model)[0] > 40e6  # the shapes are all there


def llama2_count(c) -> tuple[int, int]:
    """Parameters of a Llama from its config, by formula (q, k, v, o, gated MLP, 2 norms per layer)."""
    head = c.hidden_size // c.num_attention_heads
    attention = (
        2 * c.hidden_size * c.num_attention_heads * head + 2 * c.hidden_size * c.num_key_value_heads * head
    )
    layer = attention + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    body = c.num_hidden_layers * layer + c.hidden_size
    return body + 2 * c.vocab_size * c.hidden_size, body  # untied: embedding and unembedding


def mamba_count(c) -> tuple[int, int]:
    """Parameters of a Mamba from its config (in/out projections, conv, x/dt projections, A, D, norm)."""
    inner, rank, state = c.expand * c.hidden_size, math.ceil(c.hidden_size / 16), c.state_size
    layer = (
        c.hidden_size * 2 * inner  # in_proj, no bias
        + inner * c.conv_kernel
        + inner  # depthwise conv with bias
        + inner * (rank + 2 * state)  # x_proj
        + rank * inner
        + inner  # dt_proj with bias
        + inner * state
        + inner  # A_log, D
        + inner * c.hidden_size  # out_proj
        + c.hidden_size  # norm
    )
    body = c.num_hidden_layers * layer + c.hidden_size
    return body + c.vocab_size * c.hidden_size, body  # tied: one matrix


@pytest.mark.parametrize("name, formula", [("llama2-100k", llama2_count), ("mamba-100k", mamba_count)])
def test_parameter_counts_match_the_formula_and_the_nominal_size(name, formula):
    model = build_model(model_section(name), device="meta")
    total, non_embedding = count_parameters(model)
    assert (total, non_embedding) == formula(model.config)
    assert abs(total - nominal(name.split("-")[1])) / nominal(name.split("-")[1]) < 0.15


def test_suite_recipes_have_the_original_hyperparameters():
    expected = {
        f"llama2-{s}": {**LLAMA2_BASE, **v} for s, v in parse_table(LLAMA2_TABLE, LLAMA2_KEYS).items()
    }
    expected |= {f"mamba-{s}": {**MAMBA_BASE, **v} for s, v in parse_table(MAMBA_TABLE, MAMBA_KEYS).items()}
    assert len(expected) == 20
    for name, values in expected.items():
        model = build_model(model_section(name), device="meta")
        config = model.config
        assert type(model).__name__ == (
            "LlamaForCausalLM" if name.startswith("llama2") else "MambaForCausalLM"
        )
        assert {k: getattr(config, k) for k in values} == values, name
        if name.startswith("llama2"):
            assert config.rope_parameters["rope_theta"] == 10000.0
            assert config.rope_parameters["rope_type"] == "default"


def test_every_suite_recipe_trains_the_same_way():
    recipes = [load_recipe([p]) for p in sorted(STORIES.glob("[lm]*.yaml"))]
    assert len(recipes) == 20
    for recipe in recipes:
        assert (recipe.seq_len, recipe.batch_size, recipe.seeds.init, recipe.seeds.data) == (
            512,
            256,
            42,
            1337,
        )
        assert recipe.checkpoints.every == 400 and recipe.checkpoints.steps == [2**i for i in range(10)]
        assert recipe.data.path == "delphi-suite/stories-tokenized"
        assert recipe.tokenizer == "delphi-suite/stories-tokenizer"
        assert recipe.training == recipes[0].training
    training = recipes[0].training
    assert training["optim"] == "adamw_torch" and training["lr_scheduler_type"] == "cosine"
    assert (training["learning_rate"], training["weight_decay"], training["warmup_steps"]) == (
        5e-4,
        0.1,
        1000,
    )
    assert (training["adam_beta1"], training["adam_beta2"], training["max_grad_norm"]) == (0.9, 0.95, 1.0)
    assert training["num_train_epochs"] == 10


needs_no_mamba_ssm = pytest.mark.skipif(
    importlib.util.find_spec("mamba_ssm") is not None, reason="mamba-ssm kernels take precedence"
)


@needs_no_mamba_ssm
def test_mamba_uses_mambapy_when_installed_unless_the_recipe_says_otherwise():
    section = {**model_section("mamba-50k"), "vocab_size": 64}
    default = build_model(section, device="meta").config
    refused = build_model({**section, "use_mambapy": False}, device="meta").config
    installed = importlib.util.find_spec("mambapy") is not None
    assert default.use_mambapy is installed  # plain transformers then runs mamba.py's scan
    assert refused.use_mambapy is False


@needs_no_mamba_ssm
@pytest.mark.numerics
def test_mambapy_and_sequential_scans_agree():
    pytest.importorskip("mambapy")
    section = {**model_section("mamba-50k"), "vocab_size": 64}
    fast = build_model({**section, "use_mambapy": True}, seed=0, mamba_scan="mambapy")
    slow = build_model({**section, "use_mambapy": False}, seed=0, mamba_scan="reference")
    assert (fast.config.use_mambapy, slow.config.use_mambapy) == (True, False)
    tokens = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(0))
    fast_loss = fast(input_ids=tokens, labels=tokens).loss
    slow_loss = slow(input_ids=tokens, labels=tokens).loss
    # mamba.py's parallel scan and the sequential one sum the same recurrence over 24 positions in another
    # order; the loss is their logsumexps over 64 tokens averaged over 2 x 23 positions
    bound = summation_bound(24 + 64 + 2 * 23)
    check("mambapy vs sequential scan: loss, relative", abs(fast_loss.item() / slow_loss.item() - 1), bound)


def test_building_from_a_bad_section_is_a_delphi_error():
    with pytest.raises(DelphiError, match="did you mean 'hidden_size'"):
        build_model({**model_section("llama2-50k"), "hidden_sise": 3}, device="meta")
    with pytest.raises(DelphiError, match="did you mean 'MambaForCausalLM'"):
        build_model({"architecture": "MambaForCausalLm"}, device="meta")


def test_check_vocab():
    check_vocab(4096, tokenizer_vocab_size=4096)
    with pytest.raises(DelphiError, match="tokenizer has 5000 tokens"):
        check_vocab(4096, tokenizer_vocab_size=5000)
