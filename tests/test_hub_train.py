"""Training runs that publish to the hub, `delphi push`, and resuming from a hub branch, end to end.

The embedded story corpus tokenized by delphi, real Trainer runs, the real huggingface_hub client talking
HTTP to the local server in tests/hub_server.py (the `hub_server` fixture), with injected faults.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import HUB_TOKEN
from safetensors.torch import load_file

from delphi.errors import DelphiError
from delphi.hub.push import push_run
from delphi.hub.verify import verify_repo
from delphi.layout import HUB_RESUME_DIR, HUB_STAGING_DIR, list_checkpoints
from delphi.recipe import load_recipe
from delphi.train.run import train

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(story_corpus, tmp_path_factory):
    from delphi.data.sequences import tokenize_dataset
    from delphi.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("hubdata")
    train_tokenizer(str(story_corpus), feature="story", split="train", vocab_size=300, out_dir=root / "tok")
    tokenize_dataset(
        str(story_corpus), feature="story", splits=["train[:20%]", "validation[:40%]"],
        tokenizer=str(root / "tok"), seq_len=16, out_dir=root / "data",
    )  # fmt: skip
    return root


def recipe_file(path: Path, root: Path, out_dir: Path, **sections) -> Path:
    recipe = {
        "model": {
            "architecture": "LlamaForCausalLM",
            "vocab_size": 300,
            "hidden_size": 8,
            "intermediate_size": 16,
            "num_attention_heads": 1,
            "num_hidden_layers": 1,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 2,
        },  # fmt: skip
        "tokenizer": str(root / "tok"),
        "data": {"path": str(root / "data"), "validation_size": 8},
        "seq_len": 16,
        "batch_size": 4,
        "checkpoints": {"every": 3, "steps": [1, 2, 4]},
        "out_dir": str(out_dir),
        "training": {"max_steps": 6, "learning_rate": 1e-2, "disable_tqdm": True, "logging_steps": 1},
        "hub": {"repo": "org/tiny", "retry_wait": 0.05},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(recipe))
    return path


def all_steps(out_dir: Path) -> list[int]:
    return [s for s, _ in list_checkpoints(out_dir)]


def test_run_publishes_every_checkpoint_to_its_branch(hub_server, data_root, tmp_path, caplog):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        summary = train(load_recipe([recipe_file(tmp_path / "r.yaml", data_root, out)]))

    steps = all_steps(out)
    assert steps == [1, 2, 3, 4, 6]
    expected = {f"step{s}" for s in steps} | {"main"}
    assert hub_server.branches("org/tiny") == expected
    assert set(summary["hub"]["published"]) == expected and summary["hub"]["failed"] == {}
    for step in steps:
        model = AutoModelForCausalLM.from_pretrained("org/tiny", revision=f"step{step}")
        local = load_file(out / f"step{step}" / "model.safetensors")
        remote = model.state_dict()
        assert all(torch.equal(remote[k], v) for k, v in local.items()), step
        files = hub_server.files("org/tiny", f"step{step}")
        assert not {"optimizer.pt", "scheduler.pt"} & set(files)  # push_optimizer is off
        card = files["README.md"].decode()
        assert f'revision="step{step}"' in card and "LlamaForCausalLM" in card and "validation loss" in card
        meta = json.loads(files["checkpoint.json"])
        assert f"| {meta['eval_loss']:.4f} |" in card and f"| {meta['tokens_seen']:,} |" in card
    assert (
        hub_server.files("org/tiny", "main")["model.safetensors"]
        == (out / "step6/model.safetensors").read_bytes()
    )
    assert AutoTokenizer.from_pretrained("org/tiny").bos_token_id == 0
    assert "2 branch" not in caplog.text and "6 branch(es) on the hub: main, step1, step2" in caplog.text
    manifest = json.loads(hub_server.files("org/tiny")["checkpoints.json"])  # written by the uploader
    assert [e["step"] for e in manifest["checkpoints"]] == steps and manifest["final_step"] == 6
    assert verify_repo("org/tiny")[0] == []
    # nothing staged is left behind, and the token is in no uploaded file and no log line
    assert not (out / HUB_STAGING_DIR).exists()
    for branch in expected:
        for name, data in hub_server.files("org/tiny", branch).items():
            assert HUB_TOKEN.encode() not in data, (branch, name)
    assert HUB_TOKEN not in caplog.text


def test_faults_never_stop_training_and_the_summary_names_what_failed(hub_server, data_root, tmp_path):
    hub_server.fail("commit", times=None, match="/commit/step2")  # step2 never goes through
    hub_server.fail("commit", times=2, mode="drop", match="/commit/step4")  # dropped twice, then fine
    hub_server.fail("tree", times=1, match="/tree/step1")  # verification listing fails once
    hub_server.hub.tamper("checkpoint.json")  # the first commit silently stores other bytes
    out = tmp_path / "run"
    recipe = load_recipe([recipe_file(tmp_path / "r.yaml", data_root, out, hub={"retries": 2})])
    summary = train(recipe)

    assert all_steps(out) == [1, 2, 3, 4, 6]  # training finished; every local checkpoint is there
    for step in all_steps(out):
        assert (out / f"step{step}" / "model.safetensors").is_file()
    hub = summary["hub"]
    assert list(hub["failed"]) == ["step2"] and "500" in hub["failed"]["step2"]
    assert set(hub["published"]) == {"step1", "step3", "step4", "step6", "main"}
    attempts = {r["branch"]: r["attempts"] for r in hub["results"]}
    assert attempts["step1"] >= 2 and attempts["step4"] == 3 and attempts["step2"] == 3
    assert hub_server.branches("org/tiny") >= {"step1", "step3", "step4", "step6", "main"}

    # `delphi push` publishes what failed, once the hub is healthy again
    hub_server.hub.clear_faults()
    again = push_run(out, "org/tiny", retry_wait=0.05)
    assert again["uploaded"] == ["step2"] and again["failed"] == {}
    assert set(again["unchanged"]) == {"step1", "step3", "step4", "step6", "main"}


def test_a_commit_whose_answer_was_lost_counts_as_published(hub_server, data_root, tmp_path):
    """The final retry's commit lands but the connection drops before the answer: the branch is verified
    on the hub and reported as published, as `delphi push` would find it."""
    hub_server.fail("commit", times=2, match="/commit/step2")  # two attempts fail outright
    hub_server.fail("commit", times=1, mode="lost", match="/commit/step2")  # the last one lands unheard
    out = tmp_path / "run"
    summary = train(load_recipe([recipe_file(tmp_path / "r.yaml", data_root, out, hub={"retries": 2})]))
    hub = summary["hub"]
    assert hub["failed"] == {} and "step2" in hub["published"]
    assert [r["attempts"] for r in hub["results"] if r["branch"] == "step2"] == [3]
    assert hub_server.hub.count("commit") >= 3 and "step2" in hub_server.branches("org/tiny")
    assert push_run(out, "org/tiny", retry_wait=0.05)["uploaded"] == []


def test_unreachable_hub_stops_before_training_unless_offline_ok(data_root, tmp_path, unreachable_hub):
    out = tmp_path / "run"
    path = recipe_file(tmp_path / "r.yaml", data_root, out)
    with pytest.raises(
        DelphiError,
        match=r"could not be reached.*needed for model repo 'org/tiny'.*Nothing was trained.*offline_ok",
    ):
        train(load_recipe([path]))
    assert all_steps(out) == []
    summary = train(load_recipe([path], ["hub.offline_ok=true"]))
    assert all_steps(out) == [1, 2, 3, 4, 6]
    assert summary["hub"]["offline"] and summary["hub"]["published"] == []


def test_push_after_an_offline_run_then_nothing_the_second_time(hub_server, data_root, tmp_path):
    out = tmp_path / "run"
    train(load_recipe([recipe_file(tmp_path / "r.yaml", data_root, out, hub={"repo": None})]))
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    import os

    def push(*extra):
        return subprocess.run(
            [sys.executable, "-m", "delphi", "push", str(out), "--repo", "org/later", *extra],
            capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO, timeout=300,
        )  # fmt: skip

    first = push()
    assert first.returncode == 0, first.stderr
    assert hub_server.branches("org/later") == {"step1", "step2", "step3", "step4", "step6", "main"}
    uploads = hub_server.hub.count("commit") + hub_server.hub.count("lfs-upload")
    second = push()
    assert second.returncode == 0, second.stderr
    assert "uploaded: nothing" in second.stdout
    assert hub_server.hub.count("commit") + hub_server.hub.count("lfs-upload") == uploads
    assert (
        hub_server.hub.count("preupload") == 7
    )  # one per branch and one for checkpoints.json, the first time only
    manifest = json.loads(hub_server.files("org/later")["checkpoints.json"])
    assert [e["branch"] for e in manifest["checkpoints"]] == ["step1", "step2", "step3", "step4", "step6"]
    assert manifest["final_step"] == 6 and all(len(e["sha256"]) == 64 for e in manifest["checkpoints"])
    assert "6 branch(es) on the hub: main, step1, step2, step3, step4, step6" in first.stdout
    assert HUB_TOKEN not in first.stdout + first.stderr + second.stdout + second.stderr
    assert "HTTP Request" not in first.stderr  # no line per request from huggingface_hub's client

    bad = subprocess.run(
        [sys.executable, "-m", "delphi", "push", str(tmp_path / "nothing"), "--repo", "org/later"],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO,
    )  # fmt: skip
    assert bad.returncode == 2 and "no such directory" in bad.stderr and "Traceback" not in bad.stderr


def test_resume_from_a_hub_branch_with_data_and_tokenizer_from_the_hub(hub_server, data_root, tmp_path):
    from delphi.hub.client import ensure_repo, publish_folder

    for repo, folder, kind in (("org/tok", "tok", "model"), ("org/data", "data", "dataset")):
        ensure_repo(repo, repo_type=kind)
        publish_folder(data_root / folder, repo, "main", commit_message=folder, repo_type=kind)
    hub_inputs = {"tokenizer": "org/tok", "data": {"path": "org/data"}}
    full = train(load_recipe([recipe_file(tmp_path / "a.yaml", data_root, tmp_path / "a", **hub_inputs,
                                          hub={"push_optimizer": True})]))  # fmt: skip
    assert "optimizer.pt" in hub_server.files("org/tiny", "step4")  # needed to resume from it

    resumed_out = tmp_path / "b"
    path = recipe_file(tmp_path / "b.yaml", data_root, resumed_out, **hub_inputs, resume="org/tiny@step4",
                       hub={"repo": "org/tiny-resumed"})  # fmt: skip
    resumed = train(load_recipe([path]))
    assert all_steps(resumed_out) == [6]
    assert not (resumed_out / HUB_RESUME_DIR).exists()  # the run goes on from its own checkpoints
    # the same machine, layout and threads: a resumed run ends exactly where the uninterrupted one does
    assert resumed["eval_loss"] == full["eval_loss"]
    a = load_file(tmp_path / "a" / "step6" / "model.safetensors")
    b = load_file(resumed_out / "step6" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    no_optimizer = recipe_file(
        tmp_path / "c.yaml", data_root, tmp_path / "c", resume="org/tiny-resumed@step6"
    )
    with pytest.raises(DelphiError, match="no optimizer state.*push_optimizer"):
        train(load_recipe([no_optimizer]))
    assert not (tmp_path / "c").exists()  # a fresh out_dir is left as it was found
