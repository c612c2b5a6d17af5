"""delphi.portable: the tokenizer and config files delphi writes say to transformers 5 exactly what transformers 5
wrote, and carry what transformers 4 needs (tests/test_transformers4.py loads them in transformers 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny import MODEL, write_recipe

from delphi.portable import make_portable

TEXTS = [
    "Once upon a time, a little cat named Tom found a red ball.",
    'Sara said, "Let us play!" Éa 🐱 \n\t x',
]


def _portable_copy(folder: Path) -> Path:
    copy = folder.with_name(folder.name + "-portable")
    shutil.copytree(folder, copy)
    make_portable(copy)
    return copy


def test_a_portable_tokenizer_gives_transformers5_the_same_tokenizer(text_dir, tmp_path):
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from delphi.data.tokenizer import build_tokenizer

    stories = pq.read_table(text_dir / "train-00000.parquet").column("story").to_pylist()
    written = tmp_path / "tok"
    build_tokenizer(iter([stories]), 300, show_progress=False).save_pretrained(
        written
    )  # as transformers 5 saves
    portable = _portable_copy(written)

    config = json.loads((portable / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "is_local" not in config and "local_files_only" not in config
    merges = json.loads((portable / "tokenizer.json").read_text())["model"]["merges"]
    assert merges and all(isinstance(m, str) and len(m.split(" ")) == 2 for m in merges)
    before, after = AutoTokenizer.from_pretrained(written), AutoTokenizer.from_pretrained(portable)
    assert [after(t).input_ids for t in TEXTS] == [before(t).input_ids for t in TEXTS]
    assert [after.decode(after(t).input_ids) for t in TEXTS] == TEXTS
    assert after.special_tokens_map == before.special_tokens_map
    assert (after.bos_token_id, after.eos_token_id, after.pad_token_id) == (0, 1, 2)


def test_merges_holding_a_space_stay_pairs():
    from delphi.portable import portable_tokenizer

    spaced = {"model": {"type": "BPE", "merges": [["a", "b"], ["c d", "e"]]}}
    assert portable_tokenizer(spaced) == spaced  # "c d e" would be ambiguous


def test_delphi_tokenizer_writes_portable_files(text_dir, tmp_path):
    from delphi.data.tokenizer import train_tokenizer

    train_tokenizer(str(text_dir), feature="story", vocab_size=300, out_dir=tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert all(
        isinstance(m, str)
        for m in json.loads((tmp_path / "tok" / "tokenizer.json").read_text())["model"]["merges"]
    )


LLAMA = {k: v for k, v in MODEL.items() if k != "architecture"}


@pytest.mark.parametrize(
    ("config_class", "kwargs", "transformers4_keys"),
    [
        (
            "LlamaConfig",
            {**LLAMA, "rope_parameters": {"rope_type": "default", "rope_theta": 50000.0}},
            {"rope_theta": 50000.0},
        ),
        (
            "LlamaConfig",
            {**LLAMA, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}},
            {"rope_theta": 500.0, "rope_scaling": {"rope_type": "linear", "factor": 2.0}},
        ),
        (
            "LlamaConfig",
            {
                **LLAMA,
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 50000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 16,
                },
            },
            {
                "rope_theta": 50000.0,
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 16,
                },
            },
        ),
        (
            "MambaConfig",
            {"vocab_size": 384, "hidden_size": 16, "num_hidden_layers": 2, "use_mambapy": True},
            {},
        ),
    ],
    ids=["llama-rope-theta", "llama-linear", "llama3", "mamba"],
)
def test_a_portable_config_is_the_same_config_to_transformers5(
    tmp_path, config_class, kwargs, transformers4_keys
):
    import transformers
    from transformers import AutoConfig

    written = tmp_path / "model"
    config = getattr(transformers, config_class)(**kwargs)
    config.use_cache = False  # what Trainer leaves in a training model's config (TrainingArguments.use_cache)
    config.save_pretrained(written)
    portable = _portable_copy(written)

    saved = json.loads((portable / "config.json").read_text())
    assert {k: saved[k] for k in transformers4_keys} == transformers4_keys
    default = getattr(transformers, config_class)()
    assert saved["use_cache"] is default.use_cache is True  # for inference, as the class defaults it
    if "use_mambapy" in saved:
        assert saved["use_mambapy"] is default.use_mambapy is False  # transformers 4 needs mambapy for true
    before, after = (
        AutoConfig.from_pretrained(written).to_dict(),
        AutoConfig.from_pretrained(portable).to_dict(),
    )
    for key in ("use_cache", "use_mambapy", "_name_or_path"):
        before.pop(key, None), after.pop(key, None)
    assert after == before


@pytest.mark.slow
def test_every_step_folder_holds_portable_files(stories_data, tmp_path):
    from transformers import AutoModelForCausalLM

    from delphi.layout import list_checkpoints
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    rope = {"rope_type": "default", "rope_theta": 50000.0}
    overrides = {
        "model": {**MODEL, "rope_parameters": rope},
        "training.max_steps": 2,
        "checkpoints.steps": [1],
    }
    train(load_recipe([write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "run", **overrides)]))
    folders = [folder for _, folder in list_checkpoints(tmp_path / "run")]
    assert [f.name for f in folders] == ["step1", "step2"]
    for folder in folders:
        config = json.loads((folder / "config.json").read_text())
        assert (config["rope_theta"], config["rope_parameters"], config["use_cache"]) == (50000.0, rope, True)
        assert (
            json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"]
            == "PreTrainedTokenizerFast"
        )
        assert AutoModelForCausalLM.from_pretrained(folder).config.rope_parameters == rope
