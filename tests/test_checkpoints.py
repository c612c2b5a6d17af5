"""Checkpoint folders: what counts as complete, what resume picks, atomic finalizing, the run context."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from delphi.atomic import write_json
from delphi.errors import DelphiError
from delphi.layout import (
    checkpoint_dir,
    latest_resumable,
    list_checkpoints,
    read_checkpoint_meta,
    trainer_checkpoint_dir,
)
from delphi.provenance import REDACTED, run_context, scrub_argv
from delphi.train.checkpoints import drop_resume_state, finalize_checkpoint, remove_unfinished_saves

RESUME_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth", "scaler.pt")


def fake_checkpoint(out_dir: Path, step: int, *, complete=True, resume_state=True) -> Path:
    """A checkpoint folder with the file names delphi writes (contents do not matter here)."""
    folder = checkpoint_dir(out_dir, step)
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "trainer_state.json"):
        (folder / name).write_text("{}")
    if resume_state:
        for name in RESUME_FILES:
            (folder / name).write_bytes(b"state")
    if complete:
        write_json(folder / "checkpoint.json", {"step": step})
    return folder


def test_only_complete_checkpoints_are_listed(tmp_path):
    fake_checkpoint(tmp_path, 1)
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 20, complete=False)  # killed before checkpoint.json
    (tmp_path / ".step30.tmp").mkdir()  # killed while writing
    (tmp_path / "step40").write_text("not a folder")
    (tmp_path / "checkpoint-50").mkdir()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1, 2, 10]
    assert list_checkpoints(tmp_path / "missing") == []


def test_latest_resumable_skips_incomplete_and_stateless_checkpoints(tmp_path):
    assert latest_resumable(tmp_path) is None
    fake_checkpoint(tmp_path, 4)
    fake_checkpoint(tmp_path, 8, resume_state=False)
    fake_checkpoint(tmp_path, 16, complete=False)
    shutil.copytree(checkpoint_dir(tmp_path, 4), tmp_path / ".step32.tmp")
    assert latest_resumable(tmp_path) == checkpoint_dir(tmp_path, 4)
    fake_checkpoint(tmp_path, 12)
    assert latest_resumable(tmp_path) == checkpoint_dir(tmp_path, 12)


def test_unfinished_saves_are_removed(tmp_path):
    fake_checkpoint(tmp_path, 1)
    for name in (".step2.tmp", ".step1.old", "checkpoint-3"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_text("partial")
    (tmp_path / ".hidden").mkdir()
    removed = remove_unfinished_saves(tmp_path)
    assert sorted(p.name for p in removed) == [".step1.old", ".step2.tmp", "checkpoint-3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "step1"]


def test_finalize_is_a_rename_that_replaces_an_older_folder(tmp_path):
    old = fake_checkpoint(tmp_path, 5)
    (old / "stale.txt").write_text("from an earlier attempt")
    temp = trainer_checkpoint_dir(tmp_path, 5)
    temp.mkdir()
    (temp / "model.safetensors").write_text("new")
    final = finalize_checkpoint(
        temp, tmp_path, 5, run_files={"recipe.yaml": "seq_len: 8\n"}, meta={"step": 5, "eval_loss": 1.5}
    )
    assert final == checkpoint_dir(tmp_path, 5) and not temp.exists()
    assert sorted(p.name for p in final.iterdir()) == ["checkpoint.json", "model.safetensors", "recipe.yaml"]
    assert read_checkpoint_meta(final) == {"step": 5, "eval_loss": 1.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step5"]


def test_finalize_keeps_resume_state_only_where_asked(tmp_path):
    fake_checkpoint(tmp_path, 1)
    for step, keep in ((2, "latest"), (3, "all"), (4, "none")):
        temp = trainer_checkpoint_dir(tmp_path, step)
        temp.mkdir()
        for name in ("model.safetensors", "trainer_state.json", *RESUME_FILES):
            (temp / name).write_text("x")
        finalize_checkpoint(temp, tmp_path, step, run_files={}, meta={"step": step}, keep_optimizer=keep)
    assert latest_resumable(tmp_path) == checkpoint_dir(tmp_path, 3)  # 4 kept none; "latest" at 2 dropped 1's
    assert not (checkpoint_dir(tmp_path, 1) / "optimizer.pt").exists()
    assert not (checkpoint_dir(tmp_path, 4) / "optimizer.pt").exists()


def test_drop_resume_state_keeps_the_model(tmp_path):
    folder = fake_checkpoint(tmp_path, 3)
    assert drop_resume_state(folder) == sorted(RESUME_FILES)
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.json",
        "config.json",
        "model.safetensors",
        "trainer_state.json",
    ]
    assert latest_resumable(tmp_path) is None


def test_read_checkpoint_meta_errors(tmp_path):
    folder = fake_checkpoint(tmp_path, 1, complete=False)
    with pytest.raises(DelphiError, match="not a complete checkpoint"):
        read_checkpoint_meta(folder)
    (folder / "checkpoint.json").write_text("{truncated")
    with pytest.raises(DelphiError, match="cannot read"):
        read_checkpoint_meta(folder)


def test_scrub_argv_removes_secrets():
    environ = {
        "HF_TOKEN": "abcdef123456",
        "WANDB_API_KEY": "0123456789abcdef0123",
        "SSH_AUTH_SOCK": "/tmp/agent",
    }
    argv = [
        "train.py",
        "--hub-token",
        "plain-secret-value",
        "--api_key=another-secret",
        "HF_TOKEN=abcdef123456",
        "--note=key 0123456789abcdef0123 inside",
        "--repo",
        "hf_AbCdEfGhIjKlMnOpQrStUv",
        "https://user:pa55@example.org/data",
        "--tokenizer",
        "out/tokenizer",
        "/tmp/agent",
    ]
    scrubbed = scrub_argv(argv, environ)
    text = " ".join(scrubbed)
    for secret in (
        "plain-secret-value",
        "another-secret",
        "abcdef123456",
        "0123456789abcdef0123",
        "hf_AbCd",
        "pa55",
    ):
        assert secret not in text
    assert scrubbed[1:3] == ["--hub-token", REDACTED]
    assert scrubbed[3] == f"--api_key={REDACTED}"
    # not secrets: a tokenizer path, a socket path named by a non-secret variable
    assert scrubbed[-3:] == ["--tokenizer", "out/tokenizer", "/tmp/agent"]


def test_run_context_has_versions_and_no_host_or_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SuperSecretValue123")
    monkeypatch.setattr(sys, "argv", ["delphi", "train", "--token", "hf_SuperSecretValue123"])
    context = run_context(world_size=2, cwd=tmp_path)
    text = json.dumps(context)
    assert "SuperSecret" not in text
    assert socket.gethostname() not in text
    assert context["world_size"] == 2
    assert context["device"] == "cpu" or context["device"].startswith(("cuda", "mps"))
    for package in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "delphi"):
        assert context["packages"][package]
    assert context["git"] is None  # tmp_path is not a git checkout
    assert context["argv"] == ["delphi", "train", "--token", REDACTED]


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_run_context_records_git_commit_and_dirty_flag(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    state = run_context(cwd=tmp_path)["git"]
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "untracked.txt").write_text("outputs do not count")
    assert run_context(cwd=tmp_path)["git"]["dirty"] is False
    (tmp_path / "a.txt").write_text("2")
    assert run_context(cwd=tmp_path)["git"] == {"commit": state["commit"], "dirty": True}


def test_a_step_folder_holds_the_weights_once(tmp_path):
    """FSDP's second copy of the weights (pytorch_model_fsdp.bin) is not kept next to model.safetensors."""
    temp = trainer_checkpoint_dir(tmp_path, 3)
    temp.mkdir()
    for name in (
        "model.safetensors",
        "pytorch_model_fsdp.bin",
        "optimizer.bin",
        "scheduler.pt",
        "trainer_state.json",
    ):
        (temp / name).write_text("x")
    final = finalize_checkpoint(temp, tmp_path, 3, run_files={}, meta={"step": 3})
    assert sorted(p.name for p in final.iterdir()) == [
        "checkpoint.json", "model.safetensors", "optimizer.bin", "scheduler.pt", "trainer_state.json",
    ]  # fmt: skip
    assert latest_resumable(tmp_path) == final
