"""Checkpoints written with the current transformers load with transformers 4, with the same ids and logits.

Trains a tiny Llama with `rope_theta: 50000`, one with a scaled RoPE (linear, factor 2) and a tiny Mamba,
computes token ids and logits of a tokenizer folder and every step folder with the current transformers,
then runs `tests/transformers4_load.py` in a transformers 4 venv (`make test-tf4` builds `.venv-tf4` and
runs this file; `DELPHI_TF4_PYTHON` names another interpreter) and compares what it saw.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import MAMBA_MODEL, MODEL, train_two_steps

from delphi.layout import list_checkpoints

REPO = Path(__file__).resolve().parents[1]
# `make test-tf4` names its venv's interpreter, which must then exist; otherwise .venv-tf4 is used if it is there
TF4_PYTHON = os.environ.get("DELPHI_TF4_PYTHON") or str(REPO / ".venv-tf4" / "bin" / "python")

pytestmark = [
    pytest.mark.slow,  # trains three runs and starts a process
    pytest.mark.skipif(
        "DELPHI_TF4_PYTHON" not in os.environ and not Path(TF4_PYTHON).is_file(),
        reason="needs a transformers 4 venv: `make test-tf4` builds .venv-tf4 and runs this file",
    ),
]

TEXTS = ["Once upon a time, a little cat named Tom found a red ball.", 'Sara said, "Let us play!" Éa 🐱']
# The same weights run through the same torch CPU kernels in both processes, but by different library code
# (transformers 4's and 5's attention, RoPE and Mamba modules), which may order float32 operations differently:
# logits of size ~10 then differ by a few float32 ulps (1e-6). 1e-5 allows that and nothing more: a real
# difference (another rope_theta, a missing scaling, other weights) moves logits by 1e-3 or more.
LOGITS_ATOL = 1e-5

ROPE_THETA = {"rope_type": "default", "rope_theta": 50000.0}
ROPE_LINEAR = {"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0}
# weights large enough that RoPE shows in the logits: with the default init (0.02) a two-step model's attention
# is near uniform and transformers 4's default rope_theta (10000) moves its logits by only 2e-5; with 0.2, by 0.5
LLAMA = {**MODEL, "initializer_range": 0.2}
MAMBA = MAMBA_MODEL


@pytest.fixture(scope="module")
def cases(stories_data, tmp_path_factory) -> Path:
    """A folder with cases.json (tokenizer folder and step folders to load) and the current transformers'
    ids and logits of each, as `transformers4_load.py` reads and writes them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("tf4")
    runs = {
        "llama-rope-theta": train_two_steps(
            stories_data, root, "llama-rope-theta", {**LLAMA, "rope_parameters": ROPE_THETA}
        ),
        "llama-rope-linear": train_two_steps(
            stories_data, root, "llama-rope-linear", {**LLAMA, "rope_parameters": ROPE_LINEAR}
        ),
        "mamba": train_two_steps(stories_data, root, "mamba", MAMBA),
    }
    cases = [{"name": "tokenizer", "path": str(stories_data / "tok"), "texts": TEXTS, "model": False}]
    cases += [
        {"name": f"{name}/{folder.name}", "path": str(folder), "texts": TEXTS, "model": True}
        for name, out in runs.items()
        for _, folder in list_checkpoints(out)
    ]
    reports, logits = {}, {}
    for case in cases:
        tokenizer = AutoTokenizer.from_pretrained(case["path"])
        ids = [tokenizer(text).input_ids for text in TEXTS]
        reports[case["name"]] = {"ids": ids, "specials": [0, 1, 2]}
        if case["model"]:
            model = AutoModelForCausalLM.from_pretrained(case["path"]).eval()
            with torch.no_grad():
                logits[case["name"]] = model(input_ids=torch.tensor([[0, *ids[0]]])).logits[0]
            reports[case["name"]]["rope_parameters"] = getattr(model.config, "rope_parameters", None)
    (root / "cases.json").write_text(json.dumps(cases))
    (root / "current.json").write_text(json.dumps(reports))
    torch.save(logits, root / "current-logits.pt")
    return root


@pytest.fixture(scope="module")
def tf4(cases) -> dict:
    """Run the transformers 4 side on the cases; its report, with its logits under "logits"."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # transformers 4's venv imports nothing of delphi's
    done = subprocess.run(
        [TF4_PYTHON, str(REPO / "tests" / "transformers4_load.py"), str(cases)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, f"transformers 4 side failed:\n{done.stderr[-4000:]}"
    report = json.loads((cases / "tf4.json").read_text())
    assert report["transformers"].startswith("4."), report["transformers"]
    errors = {name: seen["error"] for name, seen in report["cases"].items() if "error" in seen}
    assert not errors, f"transformers {report['transformers']} could not load delphi's files: {errors}"
    print(f"transformers 4 side: transformers {report['transformers']}, torch {report['torch']}")
    return {**report, "logits": load_file(cases / "tf4-logits.safetensors")}


def test_transformers4_gives_the_same_token_ids(cases, tf4):
    current = json.loads((cases / "current.json").read_text())
    assert set(tf4["cases"]) == set(current)
    for name, seen in tf4["cases"].items():
        assert seen["tokenizer_class"] == "PreTrainedTokenizerFast", name
        assert seen["ids"] == current[name]["ids"], name
        assert seen["specials"] == current[name]["specials"], name  # <bos> <eos> <pad> at 0, 1, 2
        assert seen["decoded"] == TEXTS, name  # byte-level BPE: reversible in both


def test_transformers4_reads_the_rope_settings_and_the_inference_config(tf4):
    configs = {name: seen["config"] for name, seen in tf4["cases"].items() if "config" in seen}
    assert len(configs) == 6  # steps 1 and 2 of three runs
    for name, config in configs.items():
        assert config["use_cache"] is True, name  # training's use_cache: false stays out of checkpoints
        if name.startswith("llama-rope-theta"):
            assert (config["rope_theta"], config["rope_scaling"]) == (50000.0, None), name
        if name.startswith("llama-rope-linear"):
            assert config["rope_theta"] == 50000.0, name
            assert config["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}, name


def test_transformers4_gives_the_same_logits(cases, tf4):
    current = torch.load(cases / "current-logits.pt")
    assert set(tf4["logits"]) == set(current) and len(current) == 6
    for name, logits in current.items():
        difference = (tf4["logits"][name] - logits).abs().max().item()
        assert difference <= LOGITS_ATOL, f"{name}: logits differ by {difference:.2e} in transformers 4"
