"""A recipe's `model:` section: a transformers `*ForCausalLM` class and its config's keys, checked.

The section names a `*ForCausalLM` class (`architecture`) and gives the rest to that class's own config
class, so every architecture transformers has is spelled exactly as in its docs. Checked here without
building any weights (delphi.models builds them).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re
from typing import Any

from delphi.errors import DelphiError, did_you_mean

# Config kwargs that transformers consumes in `PreTrainedConfig.__post_init__` without a field of their own.
_CONFIG_KWARGS = ("attn_implementation",)


@functools.cache
def causal_lm_architectures() -> tuple[str, ...]:
    """Every `*ForCausalLM` class name transformers exports (the Auto class is not an architecture)."""
    import transformers

    return tuple(
        sorted(n for n in dir(transformers) if n.endswith("ForCausalLM") and not n.startswith("Auto"))
    )


def model_class(architecture: str) -> type:
    """The transformers class named `architecture`, or a DelphiError that suggests the closest name."""
    import transformers

    if architecture.endswith("ForCausalLM") and not architecture.startswith("Auto"):
        try:
            cls = getattr(transformers, architecture, None)
        except ImportError as e:  # a real architecture whose optional dependency is missing
            raise DelphiError(f"architecture '{architecture}' cannot be imported: {e}") from e
        if isinstance(cls, type):
            return cls
    names = causal_lm_architectures()  # listing them is slow (~0.2 s), so only to suggest one
    raise DelphiError(
        f"unknown architecture '{architecture}': transformers {transformers.__version__} has no such "
        f"*ForCausalLM class{did_you_mean(architecture, names)}"
    )


def config_keys(config_class: type) -> list[str]:
    """The keys a config class accepts: its dataclass fields plus the few kwargs transformers consumes."""
    return [f.name for f in dataclasses.fields(config_class) if f.init] + list(_CONFIG_KWARGS)


# config keys that are sizes or counts (transformers accepts any int, then fails building the weights)
SIZE_KEY = re.compile(r"(^num_\w+|_size|_dim|_rank|^max_position_embeddings|^expand|^conv_kernel)$")


def config_problems(model_section: dict[str, Any]) -> list[tuple[str, str]]:
    """Everything wrong with a `model:` section, as (key, message) pairs, without building any weights.

    Building the config itself is cheap and lets transformers' strict config classes check value types
    and architecture constraints (e.g. hidden_size divisible by num_attention_heads).
    """
    if not isinstance(model_section, dict):
        return [("", f"expected a mapping with 'architecture', got {model_section!r}")]
    architecture = model_section.get("architecture")
    if architecture is None:
        return [("architecture", "missing: name a transformers *ForCausalLM class, e.g. LlamaForCausalLM")]
    if not isinstance(architecture, str):
        return [("architecture", f"expected a class name (str), got {architecture!r}")]
    try:
        config_class = model_class(architecture).config_class
    except DelphiError as e:
        return [("architecture", str(e))]
    known = config_keys(config_class)
    problems = [
        (key, f"unknown key for {config_class.__name__}{did_you_mean(key, known)}")
        for key in model_section
        if key != "architecture" and key not in known
    ]
    problems += _rope_problems(model_section.get("rope_parameters"))
    problems += [
        (key, f"is {value}: a size or count must be at least 1")
        for key, value in model_section.items()
        if SIZE_KEY.search(key) and isinstance(value, int) and not isinstance(value, bool) and value < 1
    ]
    if problems:
        return problems
    try:
        model_config(model_section)
    except Exception as e:  # strict dataclass validation raises several exception types
        field = re.search(r"field '(\w+)'", str(e))
        return [(field.group(1) if field else "", " ".join(str(e).split()))]
    return []


def _rope_problems(rope: Any) -> list[tuple[str, str]]:
    """Unknown keys of `rope_parameters` (transformers only logs them, and the run trains without them)."""
    if not isinstance(rope, dict):
        return []
    import typing

    from transformers.modeling_rope_utils import RopeParameters

    known = list(typing.get_type_hints(RopeParameters))
    return [
        (f"rope_parameters.{key}", f"unknown key{did_you_mean(str(key), known)}")
        for key in rope
        if key not in known
    ]


def model_config(model_section: dict[str, Any]):
    kwargs = {k: v for k, v in model_section.items() if k != "architecture"}
    config_class = model_class(model_section["architecture"]).config_class
    if "use_mambapy" in config_keys(config_class) and "use_mambapy" not in kwargs:
        # mamba.py's parallel scan is 10-50x faster than the sequential fallback on CPU (more the longer
        # the sequence) and gives the same loss; setting it whenever mambapy is installed keeps config.json the same on CPU and GPU
        # machines (the mamba-ssm kernels, when present, take precedence over it anyway).
        kwargs["use_mambapy"] = importlib.util.find_spec("mambapy") is not None
    return config_class(**kwargs)
