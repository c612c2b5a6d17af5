"""A step folder resumes on another process layout: the optimizer state FSDP writes (keyed by parameter
name) and the one plain/DDP runs write (keyed by index) translate into each other exactly."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from safetensors.torch import load_file
from tiny import write_recipe

from delphi.layout import checkpoint_dir, list_checkpoints
from delphi.recipe import load_recipe
from delphi.train.resume import INDEX_OPTIMIZER, NAMED_OPTIMIZER, index_optimizer_state, named_optimizer_state
from delphi.train.run import train

STOP_AT_5 = """
from transformers import TrainerCallback

class StopAt5(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5:
            control.should_training_stop = True
"""


def _tree(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _optimizer_after_steps(model, steps=2):
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in model.named_parameters() if "norm" not in n], "weight_decay": 0.1},
            {"params": [p for n, p in model.named_parameters() if "norm" in n], "weight_decay": 0.0},
        ],
        lr=1e-2,
    )
    for _ in range(steps):
        ids = torch.randint(0, 384, (2, 16))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_optimizer_state_translates_both_ways_exactly():
    from tiny import MODEL

    from delphi.models import build_model

    model = build_model(MODEL, seed=0)
    optimizer = _optimizer_after_steps(model)
    original = optimizer.state_dict()
    named = named_optimizer_state(model, optimizer, original)
    names = {n for n, _ in model.named_parameters()}
    assert set(named["state"]) <= names and named["param_groups"][0]["params"][0] in names
    other = build_model(MODEL, seed=1)  # another copy of the architecture, as a resuming process has
    back = index_optimizer_state(other, _optimizer_after_steps(other, steps=0), named)
    assert back["param_groups"] == original["param_groups"]
    for index, state in original["state"].items():
        for key, value in state.items():
            assert torch.equal(back["state"][index][key], value), (index, key)


@pytest.mark.slow
def test_a_step_folder_with_fsdps_optimizer_file_resumes_without_fsdp(stories_data, tmp_path, monkeypatch):
    (tmp_path / "stopcb.py").write_text(STOP_AT_5)
    monkeypatch.syspath_prepend(str(tmp_path))
    keep_all = {"every": 5, "steps": [1], "keep_optimizer": "all"}
    full = write_recipe(tmp_path / "full.yaml", stories_data, tmp_path / "full", checkpoints=keep_all)
    train(load_recipe([full]))

    recipe = write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "run", checkpoints=keep_all)
    train(load_recipe([recipe], ["callbacks=['stopcb:StopAt5']"]))
    step5 = checkpoint_dir(tmp_path / "run", 5)
    # make step5 look as an FSDP run writes it: the optimizer state keyed by parameter name, in optimizer.bin
    from delphi.models import build_model

    model = build_model(load_recipe([recipe]).model, seed=0)
    optimizer = _optimizer_after_steps(model, steps=0)
    index_state = torch.load(step5 / INDEX_OPTIMIZER, weights_only=True)
    torch.save(named_optimizer_state(model, optimizer, index_state), step5 / NAMED_OPTIMIZER)
    (step5 / INDEX_OPTIMIZER).unlink()
    before = _tree(step5)

    summary = train(load_recipe([recipe]))
    assert summary["checkpoints"][-1] == 12
    assert _tree(step5) == before, "the step folder itself is never changed"
    assert not any(p.name.startswith(".resume-") for p in (tmp_path / "run").iterdir())
    a = load_file(checkpoint_dir(tmp_path / "full", 12) / "model.safetensors")
    b = load_file(checkpoint_dir(tmp_path / "run", 12) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed through the translation, bitwise"
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [1, 5, 10, 12]
    shutil.rmtree(tmp_path / "full")
