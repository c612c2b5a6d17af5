"""End to end: recipe -> `delphi.train` on the embedded story corpus tokenized by delphi itself.

Real tokenizer, real parquet shards, real Trainer runs, real launcher processes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from numerics import assert_losses_agree, assert_weights_agree
from safetensors.torch import load_file
from tiny import MODEL, REPO, free_port, kill_training_after, run_process, write_recipe

from delphi.errors import DelphiError
from delphi.layout import list_checkpoints, read_checkpoint_meta
from delphi.models import build_model
from delphi.recipe import load_recipe
from delphi.train.run import train

pytestmark = pytest.mark.slow  # trains real runs (see `make test-fast`)
SECRET = "hf_" + "S3cr3tT0k3nThatMustNeverBeWritten01"


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    step, folder = list_checkpoints(out_dir)[-1]
    return load_file(folder / "model.safetensors")


def step_losses(out_dir: Path) -> dict[int, float]:
    state = json.loads((list_checkpoints(out_dir)[-1][1] / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def test_recipe_trains_end_to_end_on_tinystories(stories_data, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_TOKEN", SECRET)
    out = tmp_path / "run"
    recipe = load_recipe([write_recipe(tmp_path / "r.yaml", stories_data, out)])
    summary = train(recipe)

    assert summary["checkpoints"] == [1, 2, 4, 5, 10, 12]
    assert [s for s, _ in list_checkpoints(out)] == [1, 2, 4, 5, 10, 12]
    first, last = read_checkpoint_meta(out / "step1"), read_checkpoint_meta(out / "step12")
    assert last["eval_loss"] < first["eval_loss"] - 0.2, (first["eval_loss"], last["eval_loss"])
    assert summary["eval_loss"] == last["eval_loss"]
    assert last["tokens_seen"] == 12 * 8 * 32

    model = AutoModelForCausalLM.from_pretrained(out / "step12")
    tok = AutoTokenizer.from_pretrained(out / "step12")
    assert model.config.vocab_size == 384 and tok.bos_token_id == 0
    saved = yaml.safe_load((out / "step12" / "recipe.yaml").read_text())
    assert saved == recipe.to_dict()
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"token leaked into {path}"


def test_bad_inputs_fail_before_training(stories_data, tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def fails(match, recipe_path=None, **overrides):
        out = tmp_path / "never"
        path = recipe_path or write_recipe(tmp_path / "bad.yaml", stories_data, out, **overrides)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="delphi"), pytest.raises(DelphiError, match=match):
            train(load_recipe([path]))
        assert not list_checkpoints(out), "nothing may be trained"
        # refused before the run was set up (the start lines name the batch split and checkpoint steps)
        assert "checkpoints at steps" not in caplog.text and "global batch" not in caplog.text

    fails(r"no such file or directory: .*missing. \(dataset\)", **{"data.path": str(tmp_path / "missing")})
    fails(r"'ids' not found.*tokens", **{"data.feature": "ids"})
    fails(
        r"384 tokens but the model's vocab_size is 383; set model.vocab_size to at least 384",
        model={**MODEL, "vocab_size": 383},
    )
    fails(r"longer|length.*32.*seq_len 16|16", seq_len=16)
    fails(r"micro_batch_size .* is 3: must divide batch_size \(10\)", batch_size=10, micro_batch_size=3)

    def token_dir(name, rows):
        folder = tmp_path / name
        folder.mkdir()
        for split in ("train", "validation"):
            table = pa.table({"tokens": pa.array(rows * 16, pa.list_(pa.int32()))})
            pq.write_table(table, folder / f"{split}-00000.parquet")
        return str(folder)

    fails(r"mixed|length", **{"data.path": token_dir("mixed", [[0] + [5] * 31, [0] + [5] * 20])})
    fails(r"400.*384", **{"data.path": token_dir("big_id", [[0] + [5] * 30 + [400]])})


def test_out_dir_of_a_different_run_is_refused(stories_data, tmp_path):
    out = tmp_path / "run"
    train(load_recipe([write_recipe(tmp_path / "a.yaml", stories_data, out, **{"training.max_steps": 2})]))
    before = (out / "step2" / "model.safetensors").read_bytes()
    other = write_recipe(tmp_path / "b.yaml", stories_data, out, seeds={"init": 8, "data": 11})
    with pytest.raises(DelphiError, match=r"different run.*seeds.init: 7 -> 8.*--overwrite"):
        train(load_recipe([other], ["training.max_steps=2"]))
    assert (out / "step2" / "model.safetensors").read_bytes() == before
    never = load_recipe([tmp_path / "a.yaml"], ["resume=never", "training.max_steps=2"])
    with pytest.raises(DelphiError, match="resume is 'never'"):
        train(never)
    broken = load_recipe([other], ["training.max_steps=2", f"data.path={tmp_path / 'missing'}"])
    with pytest.raises(DelphiError, match="no such file or directory"):
        train(broken, overwrite=True)  # --overwrite with a bad input must not have deleted anything
    assert (out / "step2" / "model.safetensors").read_bytes() == before
    summary = train(load_recipe([other], ["training.max_steps=2"]), overwrite=True)
    assert summary["checkpoints"] == [1, 2]
    assert (out / "step2" / "model.safetensors").read_bytes() != before


SLOW_CALLBACK = """
import time
from transformers import TrainerCallback

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.15)
"""


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(stories_data, tmp_path):
    (tmp_path / "slowcb.py").write_text(SLOW_CALLBACK)
    extra = {"callbacks": ["slowcb:Slow"], "training.max_steps": 20}
    full = write_recipe(tmp_path / "full.yaml", stories_data, tmp_path / "full", **extra)
    killed = write_recipe(tmp_path / "killed.yaml", stories_data, tmp_path / "killed", **extra)
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}

    done = run_process([sys.executable, "-m", "delphi.train", str(full)], env)
    assert done.returncode == 0, done.stderr[-3000:]

    env_all = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    kill_training_after(killed, tmp_path / "killed" / "step10", env_all, pause=0.4)  # in steps 11-14
    assert [s for s, _ in list_checkpoints(tmp_path / "killed")][-1] < 20

    resumed = run_process([sys.executable, "-m", "delphi.train", str(killed)], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert step_losses(tmp_path / "killed") == step_losses(tmp_path / "full")


@pytest.mark.slow
@pytest.mark.numerics
def test_accelerate_two_cpu_processes_match_one(stories_data, tmp_path):
    """The shipped multi-cpu config really starts 2 processes, and they train like 1 (same global batch)."""
    one = write_recipe(tmp_path / "one.yaml", stories_data, tmp_path / "one")
    two = write_recipe(tmp_path / "two.yaml", stories_data, tmp_path / "two", micro_batch_size=2)
    launch = [sys.executable, "-m", "accelerate.commands.launch"]

    single = run_process(
        launch + ["--config_file", "accelerate_configs/cpu.yaml", "-m", "delphi.train", str(one)]
    )
    assert single.returncode == 0, single.stderr[-3000:]
    multi = run_process(
        launch + ["--config_file", "accelerate_configs/multi-cpu.yaml", "--num_processes", "2",
                  "--main_process_port", str(free_port()),
                  "-m", "delphi.train", str(two)]
    )  # fmt: skip
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "2 process(es) x 2 micro x 2 accumulation" in multi.stderr
    context = json.loads((tmp_path / "two" / "step12" / "run_context.json").read_text())
    assert context["world_size"] == 2

    losses_one, losses_two = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert sorted(losses_one) == sorted(losses_two) == list(range(1, 13))
    assert_losses_agree(losses_two, losses_one, what="per-step loss, 2 processes vs 1")
    evals = [read_checkpoint_meta(tmp_path / run / "step12")["eval_loss"] for run in ("two", "one")]
    assert_losses_agree({12: evals[0]}, {12: evals[1]}, what="eval loss, 2 processes vs 1")
    # the README's figures: the weights after 12 steps, against where both runs started
    recipe = load_recipe([one])
    start = build_model(recipe.model, seed=recipe.seeds.init).state_dict()
    final = [load_file(tmp_path / run / "step12" / "model.safetensors") for run in ("two", "one")]
    assert_weights_agree(*final, {k: start[k] for k in final[1]}, what="2 processes vs 1")


@pytest.mark.slow
def test_single_process_launch_asked_for_two_warns_loudly(stories_data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "run", **{"training.max_steps": 2})
    proc = run_process(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
         "-m", "delphi.train", str(recipe)]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "asked for 2 processes but this run has world size 1" in proc.stderr
    assert "accelerate_configs/multi-cpu.yaml" in proc.stderr


def test_wandb_offline_writes_a_run(stories_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "w" * 40)
    recipe = write_recipe(
        tmp_path / "r.yaml", stories_data, tmp_path / "run", wandb="delphi-tests/stories",
        **{"training.max_steps": 3},
    )  # fmt: skip
    train(load_recipe([recipe]))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    logged = b"".join(p.read_bytes() for p in runs[0].rglob("*") if p.is_file())
    assert b"tokens_per_second" in logged and b"eval_loss" in logged
    assert b"delphi_recipe" in logged
    assert b"w" * 40 not in logged


def test_wandb_without_login_fails_before_training(stories_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "run", wandb="proj")
    with pytest.raises(DelphiError, match="WANDB_MODE=offline"):
        train(load_recipe([recipe]))
    monkeypatch.setenv("WANDB_MODE", "")
    with pytest.raises(DelphiError, match="WANDB_MODE is set but empty"):
        train(load_recipe([recipe]))


def test_generate_from_a_run_is_reproducible(stories_data, tmp_path):
    from delphi.generate import generate

    out = tmp_path / "run"
    train(load_recipe([write_recipe(tmp_path / "r.yaml", stories_data, out)]))
    a = generate(out, prompt="Once upon a time", n=2, max_new_tokens=20, seed=3)
    assert a == generate(out / "step12", prompt="Once upon a time", n=2, max_new_tokens=20, seed=3)
    assert a != generate(out, prompt="Once upon a time", n=2, max_new_tokens=20, seed=4)
    assert len(a) == 2 and all(text.startswith("Once upon a time") for text in a)
    assert generate(out, revision="step5", n=1, max_new_tokens=8, seed=1) == generate(
        out / "step5", n=1, max_new_tokens=8, seed=1
    )
    assert generate(out, revision="step5", n=1, max_new_tokens=8, seed=1) != generate(
        out, n=1, max_new_tokens=8, seed=1
    )
    with pytest.raises(DelphiError, match="no complete checkpoint 'step3'"):
        generate(out, revision="step3")
    greedy = generate(out / "step1", prompt="The cat", n=1, max_new_tokens=10, temperature=0)
    assert greedy == generate(out / "step1", prompt="The cat", n=1, max_new_tokens=10, temperature=0, seed=9)
    with pytest.raises(DelphiError, match="no complete step checkpoints"):
        generate(tmp_path, n=1)


def test_cli_train_and_generate(stories_data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "run")
    proc = run_process(
        [sys.executable, "-m", "delphi", "train", str(recipe), "--set", "training.max_steps=3"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final validation loss:" in proc.stdout
    assert "checkpoints at steps: 1, 2, 3 (3 checkpoints)" in proc.stderr
    gen = run_process([sys.executable, "-m", "delphi", "generate", str(tmp_path / "run"), "-n", "1",
                   "--max-new-tokens", "5"])  # fmt: skip
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert "Once upon a time" in gen.stdout
    bad = run_process([sys.executable, "-m", "delphi.train", str(recipe), "--set", "training.lerning_rate=1"])
    assert bad.returncode == 2
    assert "learning_rate" in bad.stderr and "Traceback" not in bad.stderr


def test_explicit_resume_path_continues_into_a_new_out_dir(stories_data, tmp_path):
    keep = {"checkpoints": {"every": 5, "steps": [1, 2, 4], "keep_optimizer": "all"}}
    a = write_recipe(tmp_path / "a.yaml", stories_data, tmp_path / "a", **keep)
    train(load_recipe([a]))
    b = write_recipe(
        tmp_path / "b.yaml", stories_data, tmp_path / "b", resume=str(tmp_path / "a" / "step5"), **keep
    )
    summary = train(load_recipe([b]))
    assert summary["checkpoints"] == [10, 12]
    wa, wb = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    bad = write_recipe(tmp_path / "c.yaml", stories_data, tmp_path / "c", resume=str(tmp_path / "a"))
    with pytest.raises(DelphiError, match="not a complete checkpoint with optimizer state"):
        train(load_recipe([bad]))
    # a checkpoint of another model: one line before anything is written, not a state-dict traceback
    step5 = str(tmp_path / "a" / "step5")
    wider = write_recipe(
        tmp_path / "w.yaml", stories_data, tmp_path / "w", resume=step5, **{"model.hidden_size": 32}
    )
    with pytest.raises(
        DelphiError, match=r"holds a LlamaForCausalLM of other sizes.*\(384, 16\) -> \(384, 32\)"
    ):
        train(load_recipe([wider]))
    assert not (tmp_path / "w").exists()


def test_zero_means_no_regular_checkpoints(stories_data, tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", stories_data, tmp_path / "run", checkpoints={"every": 0, "steps": [3]}
    )
    assert train(load_recipe([recipe]))["checkpoints"] == [3, 12]
    with pytest.raises(DelphiError, match="validation_size"):
        load_recipe([recipe], ["data.validation_size=0"])
