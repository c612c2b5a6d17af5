"""The Python API (`delphi.runs`, `delphi.checkpoints`, `delphi.load`) on real local runs; on the hub in
tests/test_hub_runs.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tiny import run_process

from delphi.errors import DelphiError
from delphi.layout import read_checkpoint_meta


def test_import_delphi_stays_light():
    """`import delphi` and the API's names import neither torch nor transformers (notebooks, `--help`)."""
    code = "import sys, delphi; delphi.load; delphi.runs; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = run_process([sys.executable, "-c", code], check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def run_dir(stories_data, tmp_path_factory) -> Path:
    from test_logprobs import train_tiny_run

    root = tmp_path_factory.mktemp("api")
    train_tiny_run(root, stories_data, "tiny-a")
    train_tiny_run(root, stories_data, "tiny-b", seeds={"init": 8, "data": 12})
    return root / "tiny-a"


@pytest.mark.slow
def test_runs_and_checkpoints_of_local_runs(run_dir):
    import delphi
    from delphi.models import build_model, count_parameters

    found = delphi.runs(run_dir.parent)
    assert [r.name for r in found] == ["tiny-a", "tiny-b"]
    a = found[0]
    assert (a.source, a.status, a.step, a.max_steps, a.checkpoints) == (str(run_dir), "done", 8, 8, 4)
    assert a.architecture == "LlamaForCausalLM" and a.seeds == (7, 11) and found[1].seeds == (8, 12)
    assert a.parameters == count_parameters(build_model(a.recipe["model"], device="meta"))[0]
    assert a.eval_loss == read_checkpoint_meta(run_dir / "step8")["eval_loss"]
    assert delphi.runs(run_dir) == [a]

    ckpts = delphi.checkpoints(run_dir)
    assert [c.step for c in ckpts] == [1, 2, 4, 8]
    for c in ckpts:
        meta = json.loads((run_dir / c.branch / "checkpoint.json").read_text())
        assert (c.tokens_seen, c.eval_loss, c.reference) == (
            meta["tokens_seen"],
            meta["eval_loss"],
            str(run_dir / c.branch),
        )
    assert delphi.checkpoints(run_dir / "step4") == [ckpts[2]]

    with pytest.raises(DelphiError, match="no such directory: './nope'"):
        delphi.runs("./nope")


@pytest.mark.slow
def test_load_takes_every_reference_a_command_takes(run_dir):
    import torch
    from transformers import AutoModelForCausalLM

    import delphi

    ids = torch.tensor([[0, 5, 9, 17, 3]])
    direct = AutoModelForCausalLM.from_pretrained(run_dir / "step4").eval()
    for ref, step in (
        (run_dir, 4),
        (run_dir, "step4"),
        (run_dir / "step4", None),
        (str(run_dir / "step4"), 4),
    ):
        model, tok = delphi.load(ref, step=step)
        assert not model.training and torch.equal(model(ids).logits, direct(ids).logits)
        assert (
            tok.bos_token_id == 0 and tok.decode(tok("Once upon a time")["input_ids"]) == "Once upon a time"
        )
    final, _ = delphi.load(run_dir)  # the newest checkpoint: the final model of a complete run
    assert torch.equal(final(ids).logits, AutoModelForCausalLM.from_pretrained(run_dir / "step8")(ids).logits)
    with pytest.raises(DelphiError, match="has no complete checkpoint 'step3'"):
        delphi.load(run_dir, step=3)
    with pytest.raises(DelphiError, match="is checkpoint step4 of run"):
        delphi.load(run_dir / "step4", step=2)
