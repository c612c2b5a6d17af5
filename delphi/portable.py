"""Checkpoint and tokenizer files that load the same with transformers 4 as with transformers 5.

transformers 5 (with tokenizers >= 0.20) writes what transformers 4 reads differently or not at all:
- `tokenizer_config.json` names the tokenizer class `TokenizersBackend`, a class transformers 4 does not
  have (its loading fails). transformers 5's `PreTrainedTokenizerFast` is that class under its old name,
  and transformers 4 has `PreTrainedTokenizerFast` too: naming it loads the same `tokenizer.json` in both.
- `tokenizer.json` lists BPE merges as pairs (`["a", "b"]`), which tokenizers 0.20 introduced; transformers
  up to 4.44 requires an older tokenizers that reads only `"a b"`, and every tokenizers reads that. A byte-level
  BPE's tokens never hold a space (it is the byte `Ġ`), so both forms say the same; delphi writes the old one.
- `config.json` holds the rotary settings only as `rope_parameters`, which transformers 4 ignores: it falls
  back to its default `rope_theta` (a silently different model). Beside `rope_parameters` (which transformers
  5 reads first) delphi writes transformers 4's spelling: `rope_theta`, `partial_rotary_factor` and, for a
  scaled RoPE, `rope_scaling`.
- `config.json` has `use_cache: false`, because Trainer sets the model's config to the training argument
  `use_cache` while it trains, and a Mamba's `use_mambapy: true`, delphi's choice of transformers' fallback
  scan for training without mamba-ssm, which transformers 4 refuses to load without the `mambapy` package.
  A checkpoint is for inference: both get the config class's own default (true and false).
Otherwise the files stay as transformers 5 writes them, and transformers 5 reads them back unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from delphi import atomic

TOKENIZER_CONFIG = "tokenizer_config.json"
MODEL_CONFIG = "config.json"
TOKENIZER_FILE = "tokenizer.json"
# transformers 5's fast-tokenizer class and the name both majors know it by
_BACKEND_CLASS = "TokenizersBackend"
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
# how the tokenizer was loaded (transformers 5 keeps its from_pretrained arguments in the saved config),
# not what it is: a hub copy would otherwise say `is_local: true`
_LOADING_KEYS = ("is_local", "local_files_only")
# rotary keys transformers 4 reads at the top level of config.json; the rest of a scaled RoPE's parameters
# is its `rope_scaling`
_TOP_LEVEL_ROPE_KEYS = ("rope_theta", "partial_rotary_factor")
# settings of training, not of the model: a checkpoint gets its config class's default
_TRAINING_KEYS = ("use_cache", "use_mambapy")


def portable_tokenizer_config(config: dict) -> dict:
    """`tokenizer_config.json`'s content with a class name transformers 4 and 5 both load."""
    config = {k: v for k, v in config.items() if k not in _LOADING_KEYS}
    if config.get("tokenizer_class") == _BACKEND_CLASS:
        config["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    return config


def portable_tokenizer(tokenizer: dict) -> dict:
    """`tokenizer.json`'s content with BPE merges as `"a b"` strings, when no token of a merge holds a space."""
    model = tokenizer.get("model") or {}
    merges = model.get("merges")
    if model.get("type") != "BPE" or not merges or not all(isinstance(m, list) for m in merges):
        return tokenizer
    if any(len(m) != 2 or " " in m[0] or " " in m[1] for m in merges):
        return tokenizer  # "a b" would be ambiguous: keep the pairs (tokenizers >= 0.20 and transformers >= 4.45)
    return {**tokenizer, "model": {**model, "merges": [f"{a} {b}" for a, b in merges]}}


def portable_model_config(config: dict) -> dict:
    """`config.json`'s content with transformers 4's rotary keys and the config class's defaults of
    `_TRAINING_KEYS`."""
    config = dict(config)
    rope = config.get("rope_parameters")
    # a flat dict only: RoPE per layer type (a dict of dicts) has no transformers 4 spelling
    if isinstance(rope, dict) and "rope_theta" in rope:
        for key in _TOP_LEVEL_ROPE_KEYS:
            if key in rope:
                config[key] = rope[key]
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = {k: v for k, v in rope.items() if k not in _TOP_LEVEL_ROPE_KEYS}
    present = [key for key in _TRAINING_KEYS if key in config]
    if present and config.get("model_type"):
        defaults = _config_defaults(config["model_type"])
        config.update({key: defaults[key] for key in present if defaults.get(key) is not None})
    return config


def _config_defaults(model_type: str) -> dict:
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(model_type).to_dict()
    except (KeyError, ValueError):  # a model type this transformers does not know: values stay as they are
        return {}


def make_portable(folder: str | Path) -> None:
    """Rewrite the tokenizer and config files in `folder` (those present), each atomically."""
    folder = Path(folder)
    converters = {
        TOKENIZER_FILE: portable_tokenizer,
        TOKENIZER_CONFIG: portable_tokenizer_config,
        MODEL_CONFIG: portable_model_config,
    }
    for name, convert in converters.items():
        path = folder / name
        if not path.is_file():
            continue
        before = json.loads(path.read_text(encoding="utf-8"))
        after = convert(before)
        if after != before:
            # as transformers writes them: indent 2, non-ASCII kept, keys sorted (tokenizer.json: in its order)
            text = json.dumps(after, indent=2, sort_keys=name != TOKENIZER_FILE, ensure_ascii=False) + "\n"
            atomic.write_text(path, text)
