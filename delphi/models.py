"""Build any transformers causal LM from a recipe's `model:` section; count its parameters.

The section names a `*ForCausalLM` class (`architecture`) and gives the rest to that class's own config
class, so every architecture transformers has is spelled exactly as in its docs and no delphi code
is needed to load a checkpoint later (`AutoModelForCausalLM.from_pretrained`).
"""

from __future__ import annotations

import logging
from typing import Any

from delphi.errors import DelphiError
from delphi.quiet import quiet_known_warnings
from delphi.recipe.model_section import config_problems, model_class, model_config

logger = logging.getLogger("delphi.models")


def build_config(model_section: dict[str, Any]):
    """The transformers config for a `model:` section; DelphiError listing every problem otherwise."""
    problems = config_problems(model_section)
    if problems:
        raise DelphiError(
            "invalid model section: " + "; ".join(f"model.{k}: {m}" if k else m for k, m in problems)
        )
    return model_config(model_section)


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
    import torch  # torch, transformers and delphi.mamba (torch) only when a model is built: see delphi.commands
    import transformers

    from delphi.mamba import apply_scan_path

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
