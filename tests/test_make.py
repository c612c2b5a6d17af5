"""The Makefile as a new user drives it: `make demo` twice, and `make demo OUT=elsewhere`, for real.

Each test runs real `make` in a copy of the repository, with this environment's virtualenv (`VENV=...`,
an install stamp that is up to date, so nothing is installed) and a short training (`SET=training.max_steps=...`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
]


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the repository's files (tracked and new, not ignored), as a clone would have them."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    copy = tmp_path / "delphi"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    return copy


def make(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    venv = Path(sys.prefix)
    # an install stamp newer than every file: make never reinstalls this environment from the copy
    # (STAMP given on the command line reaches the sub-makes too, unlike `-o`)
    stamp = checkout / ".installed-for-the-test"
    stamp.touch()
    command = ["make", "--no-print-directory", f"VENV={venv}", f"STAMP={stamp}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(checkout)}
    return subprocess.run(command, cwd=checkout, capture_output=True, text=True, env=env, timeout=1200)


def tree(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


SHORT = "SET=training.max_steps=12 checkpoints.every=6"


def test_make_demo_twice_changes_nothing_the_second_time(checkout):
    first = make(checkout, "demo", SHORT)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "a story from the trained model (out/demo/llama2-demo)" in first.stdout
    before = tree(checkout / "out" / "demo")
    assert "llama2-demo/step12/model.safetensors" in before

    again = make(checkout, "demo", SHORT)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "already complete" in again.stdout and "a story from the trained model" in again.stdout
    after = tree(checkout / "out" / "demo")
    redrawn = {"curves.png", "curves.csv"}  # rewritten on purpose, to the same numbers
    assert {k: v for k, v in after.items() if k not in redrawn} == {
        k: v for k, v in before.items() if k not in redrawn
    }, "a second `make demo` must leave the corpus, tokenizer, dataset and run untouched"
    assert after["curves.csv"][0] == before["curves.csv"][0], "the redrawn curve has the same numbers"


def test_make_demo_out_reads_and_writes_only_under_out(checkout):
    done = make(checkout, "demo", "OUT=out/elsewhere", SHORT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = checkout / "out"
    assert sorted(p.name for p in out.iterdir()) == ["elsewhere"], "nothing may be written to out/demo"
    run = out / "elsewhere" / "llama2-demo"
    recipe = (run / "recipe.yaml").read_text()
    assert "tokenizer: out/elsewhere/tokenizer" in recipe and "path: out/elsewhere/dataset" in recipe
    assert (run / "step12" / "model.safetensors").is_file() and (out / "elsewhere" / "curves.png").is_file()


def test_make_train_uses_the_tokenizer_and_dataset_it_is_given(checkout):
    given = ["TOKENIZER=out/t/tok", "TOKENIZED=out/t/data"]
    for target in ("tokenizer", "dataset"):
        step = make(checkout, target, "OUT=out/t", *given, "VOCAB=300", "SEQ_LEN=32")
        assert step.returncode == 0, step.stderr[-3000:]
    trained = make(
        checkout, "train", *given, "RUN_DIR=out/t/run",
        "SET=training.max_steps=2 seq_len=32",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    recipe = (checkout / "out/t/run/recipe.yaml").read_text()
    assert "tokenizer: out/t/tok" in recipe and "path: out/t/data" in recipe


def test_make_suite_out_reads_and_writes_only_under_out(checkout):
    done = make(checkout, "suite", "OUT=out/s", "SEEDS=1", "SET=training.max_steps=4 checkpoints.every=2")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = checkout / "out"
    assert sorted(p.name for p in out.iterdir()) == ["s"], "nothing may be written to out/demo"
    runs = sorted(p.name for p in (out / "s").iterdir() if (p / "step4").is_dir())
    assert runs == ["llama2-demo-seed1", "mamba-demo-seed1"]
    recipe = (out / "s" / "mamba-demo-seed1" / "recipe.yaml").read_text()
    assert "tokenizer: out/s/tokenizer" in recipe and "path: out/s/dataset" in recipe
