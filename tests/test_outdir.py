"""An interrupted --overwrite never loses the old run, wherever the interruption falls."""

from __future__ import annotations

import hashlib
import os

import pytest

from delphi.atomic import write_json
from delphi.layout import REPLACED_DIR
from delphi.train import outdir
from delphi.train.checkpoints import remove_unfinished_saves


def old_run(out_dir):
    """A run's folder as delphi leaves it: recipe.yaml and four complete step folders, plus a user's file."""
    out_dir.mkdir()
    (out_dir / "recipe.yaml").write_text("seq_len: 8\n")
    (out_dir / "notes.txt").write_text("mine, not the run's")
    for step in (1, 2, 4, 8):
        folder = out_dir / f"step{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(os.urandom(64))
        write_json(folder / "checkpoint.json", {"step": step, "max_steps": 8})


def tree(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fail_on_call(monkeypatch, n):
    """Make the n-th os.replace raise KeyboardInterrupt (a Ctrl-C landing mid-move)."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(src)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("interrupted_at", [1, 3, 5])
def test_an_interrupted_set_aside_is_undone(tmp_path, monkeypatch, interrupted_at):
    out = tmp_path / "run"
    old_run(out)
    before = tree(out)
    fail_on_call(monkeypatch, interrupted_at)
    with pytest.raises(KeyboardInterrupt):
        outdir.set_aside_run(out)
    monkeypatch.undo()
    outdir.recover_set_aside_run(out)
    assert tree(out) == before and not (out / REPLACED_DIR).exists()


@pytest.mark.parametrize("interrupted_at", [1, 3, 5])
def test_an_interrupted_restore_is_finished(tmp_path, monkeypatch, interrupted_at):
    out = tmp_path / "run"
    old_run(out)
    before = tree(out)
    outdir.set_aside_run(out)
    (out / "checkpoint-3").mkdir()  # the new run's unfinished first save
    (out / "checkpoint-3" / "model.safetensors").write_bytes(b"partial")
    fail_on_call(monkeypatch, interrupted_at)
    with pytest.raises(KeyboardInterrupt):
        outdir.restore_set_aside_run(out)
    monkeypatch.undo()
    outdir.recover_set_aside_run(out)
    assert tree(out) == before and not (out / REPLACED_DIR).exists()


def test_a_committed_replacement_drops_the_old_run(tmp_path):
    out = tmp_path / "run"
    old_run(out)
    outdir.set_aside_run(out)
    (out / "step1").mkdir()
    write_json(out / "step1" / "checkpoint.json", {"step": 1, "max_steps": 2})
    (out / REPLACED_DIR / ".committed").touch()  # as a kill right after the commit leaves it
    outdir.recover_set_aside_run(out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "step1"]


def test_the_recipe_being_trained_is_never_a_leftover(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.yaml").write_text("the user's own recipe, with comments\n")
    (out / "checkpoint-1").mkdir()
    outdir.remove_failed_start(out, keep=(out / "recipe.yaml",))
    assert sorted(p.name for p in out.iterdir()) == ["recipe.yaml"]
    outdir.set_aside_run(out, keep=(out / "recipe.yaml",))
    assert (out / "recipe.yaml").read_text().startswith("the user's own")


def test_a_checkpoint_caught_between_two_renames_is_put_back(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    aside = out / ".step4.old"  # atomic.replace_dir moved step4 aside, then the process died
    aside.mkdir()
    write_json(aside / "checkpoint.json", {"step": 4})
    (out / ".step5.old").mkdir()  # an incomplete one is just removed
    assert [p.name for p in remove_unfinished_saves(out)] == [".step5.old"]
    assert sorted(p.name for p in out.iterdir()) == ["step4"]
