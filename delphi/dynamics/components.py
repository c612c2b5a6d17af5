"""Each parameter of a Llama or Mamba model named as (layer, component), the rows of the dynamics table.

`layer` is the block's index, or None for what belongs to the whole model (the embedding, the final
norm, the output head). `component` is a short name: for Llama `attn.q/k/v/o`, `mlp.gate/up/down`,
`norm.attn`, `norm.mlp`; for Mamba `norm`, `in_proj`, `conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`,
`out_proj` (a bias adds `.bias`); `embedding`, `norm.final` and `lm_head` for both. A parameter this
table does not know keeps its own dotted name, so another architecture still gets every row.

Tied input and output embeddings are one tensor: `named_parameters` yields it once, as `embedding`.
"""

from __future__ import annotations

import re

_LAYER = re.compile(r"^(?:model|backbone)\.layers\.(\d+)\.(.+)$")
_IN_LAYER = {
    "self_attn.q_proj.weight": "attn.q",
    "self_attn.k_proj.weight": "attn.k",
    "self_attn.v_proj.weight": "attn.v",
    "self_attn.o_proj.weight": "attn.o",
    "mlp.gate_proj.weight": "mlp.gate",
    "mlp.up_proj.weight": "mlp.up",
    "mlp.down_proj.weight": "mlp.down",
    "input_layernorm.weight": "norm.attn",
    "post_attention_layernorm.weight": "norm.mlp",
    "norm.weight": "norm",
    "mixer.in_proj.weight": "in_proj",
    "mixer.conv1d.weight": "conv1d",
    "mixer.conv1d.bias": "conv1d.bias",
    "mixer.x_proj.weight": "x_proj",
    "mixer.dt_proj.weight": "dt_proj",
    "mixer.dt_proj.bias": "dt_proj.bias",
    "mixer.A_log": "A_log",
    "mixer.D": "D",
    "mixer.out_proj.weight": "out_proj",
}
_WHOLE_MODEL = {
    "model.embed_tokens.weight": "embedding",
    "backbone.embeddings.weight": "embedding",
    "model.norm.weight": "norm.final",
    "backbone.norm_f.weight": "norm.final",
    "lm_head.weight": "lm_head",
}


def component_of(name: str) -> tuple[int | None, str]:
    """(layer, component) of a parameter name from `named_parameters()`."""
    match = _LAYER.match(name)
    if match:
        inner = match.group(2)
        return int(match.group(1)), _IN_LAYER.get(inner, inner.removesuffix(".weight"))
    return None, _WHOLE_MODEL.get(name, name.removesuffix(".weight"))


def named_components(model) -> list[tuple[int | None, str, str]]:
    """(layer, component, parameter name) of every trainable parameter, in the model's order; a tied
    tensor once (under its first name, the embedding)."""
    return [(*component_of(name), name) for name, p in model.named_parameters() if p.requires_grad]


def blocks(model) -> list:
    """The model's blocks (decoder layers of Llama, Mamba blocks), in order: whose outputs are the
    activations the table reports."""
    base = model.base_model
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no .layers on its base model: cannot find its blocks")
    return list(layers)
