"""Build any transformers causal LM from a recipe's `model:` section; count its parameters.

The section names a `*ForCausalLM` class (`architecture`) and gives the rest to that class's own config
class, so every architecture transformers has is spelled exactly as in its docs and no delphi code
is needed to load a checkpoint later (`AutoModelForCausalLM.from_pretrained`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import logging
import re
from typing import Any

from delphi.errors import DelphiError

logger = logging.getLogger("delphi.models")

# Config kwargs that transformers consumes in `PreTrainedConfig.__post_init__` without a field of their own.
_CONFIG_KWARGS = ("attn_implementation",)


@functools.cache
def causal_lm_architectures() -> tuple[str, ...]:
    """Every `*ForCausalLM` class name transformers exports (the Auto class is not an architecture)."""
    import transformers

    return tuple(
        sorted(n for n in dir(transformers) if n.endswith("ForCausalLM") and not n.startswith("Auto"))
    )


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """`"; did you mean 'x'?"` for the closest choice (case-insensitive), or "" when nothing is close."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else ""


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
        _config(model_section)
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


def _config(model_section: dict[str, Any]):
    kwargs = {k: v for k, v in model_section.items() if k != "architecture"}
    config_class = model_class(model_section["architecture"]).config_class
    if "use_mambapy" in config_keys(config_class) and "use_mambapy" not in kwargs:
        # mamba.py's parallel scan is 10-50x faster than the sequential fallback on CPU (more the longer
        # the sequence) and gives the same loss; setting it whenever mambapy is installed keeps config.json the same on CPU and GPU
        # machines (the mamba-ssm kernels, when present, take precedence over it anyway).
        kwargs["use_mambapy"] = importlib.util.find_spec("mambapy") is not None
    return config_class(**kwargs)


def build_config(model_section: dict[str, Any]):
    """The transformers config for a `model:` section; DelphiError listing every problem otherwise."""
    problems = config_problems(model_section)
    if problems:
        raise DelphiError(
            "invalid model section: " + "; ".join(f"model.{k}: {m}" if k else m for k, m in problems)
        )
    return _config(model_section)


def build_model(
    model_section: dict[str, Any], *, seed: int | None = None, device: str = "cpu", mamba_scan: str = "auto"
):
    """A freshly initialized model; the same section and seed give bitwise-identical weights.

    Weights are always initialized on the CPU (then moved), so the init does not depend on which
    accelerator's random generator happens to be present. `device="meta"` builds the structure only
    (no memory), which is how recipes are checked and parameters counted without paying for weights.
    Mamba models run the `mamba_scan` selective scan (see `delphi.mamba`); weights and config are the same.
    transformers' warnings that do not apply to such a model are silenced (`delphi.quiet`).
    """
    import torch
    import transformers

    from delphi.mamba import apply_scan_path
    from delphi.quiet import quiet_known_warnings

    config = build_config(model_section)
    cls = model_class(model_section["architecture"])
    if device == "meta":
        with torch.device("meta"):
            return cls(config)
    if seed is not None:
        transformers.set_seed(seed)
    model = cls(config)
    apply_scan_path(model, mamba_scan)
    quiet_known_warnings(model)
    return model if device == "cpu" else model.to(device)


def count_parameters(model) -> tuple[int, int]:
    """(total, non-embedding) parameter counts.

    Non-embedding leaves out the input embedding matrix and, when it is not tied to it, the output
    (unembedding) matrix, as the original delphi suite and Kaplan et al. count model size: at these
    tiny sizes a 4096-token vocabulary is most of the parameters and says little about capacity.
    Works on meta-device models, since only shapes are read.
    """
    total = sum(p.numel() for p in model.parameters())
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not matrices[0]:
        matrices.append(output.weight)
    return total, total - sum(m.numel() for m in matrices)


def check_vocab(model_vocab_size: int, *, tokenizer_vocab_size: int) -> None:
    """Fail early when the tokenizer has more tokens than the model's embedding matrix.

    A tokenizer larger than the model would produce ids the model cannot represent, which surface
    mid-training as an opaque index error (or a CUDA assert). The data's ids are checked with the data
    (`delphi.train.data.check_token_dataset`).
    """
    if tokenizer_vocab_size > model_vocab_size:
        raise DelphiError(
            f"the tokenizer has {tokenizer_vocab_size} tokens but the model's vocab_size is "
            f"{model_vocab_size}; set model.vocab_size to at least {tokenizer_vocab_size}"
        )
