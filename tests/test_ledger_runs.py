"""The training ledger across real processes: killed and resumed runs hold every step once; 2 processes
write the ledger 1 process writes (sequence order aside), with micro-batches and accumulation, fused or not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from numerics import LOSS_DRIFT, assert_losses_agree
from tiny import ENV, REPO, free_port, kill_training_after, run_process, write_recipe

from delphi.layout import list_checkpoints
from delphi.train import ledger

# 40 training sequences at batch 8: 5 steps an epoch, so 12 steps cover epochs 0, 1 and 2
SMALL = {"data.train_split": "train[:40]", "training.max_steps": 12, "ledger": True}

SLOW_CALLBACK = """
import time
from transformers import TrainerCallback

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.15)
"""

# SIGKILL right after step 6's checkpoint: its ledger part (steps 4-6) is on disk
KILL_CALLBACK = """
import os, signal
from transformers import TrainerCallback

class KillAt6(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 6:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def rows(run: Path) -> dict[tuple[int, int], tuple[int, float]]:
    table = ledger.read(run).to_pydict()
    keys = list(zip(table["step"], table["index"], strict=True))
    assert len(keys) == len(set(keys)), "a (step, sequence) occurs twice"
    return {k: (e, loss) for k, e, loss in zip(keys, table["epoch"], table["loss"], strict=True)}


def train_process(recipe: Path, extra_path: Path) -> subprocess.CompletedProcess:
    return run_process(
        [sys.executable, "-m", "delphi.train", str(recipe)], {"PYTHONPATH": f"{REPO}{os.pathsep}{extra_path}"}
    )


@pytest.mark.slow
def test_sigkill_mid_run_and_resume_hold_every_step_once(stories_data, tmp_path):
    (tmp_path / "slowcb.py").write_text(SLOW_CALLBACK)
    extra = SMALL | {"callbacks": ["slowcb:Slow"], "checkpoints.every": 3, "checkpoints.steps": []}
    full = write_recipe(tmp_path / "full.yaml", stories_data, tmp_path / "full", **extra)
    killed = write_recipe(tmp_path / "killed.yaml", stories_data, tmp_path / "killed", **extra)
    done = train_process(full, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    env = {**ENV, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    kill_training_after(killed, tmp_path / "killed" / "step3", env, pause=0.5)  # in steps 4-7
    assert [s for s, _ in list_checkpoints(tmp_path / "killed")][-1] < 12

    resumed = train_process(killed, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    got, want = rows(tmp_path / "killed"), rows(tmp_path / "full")
    assert sorted({s for s, _ in got}) == list(range(1, 13))
    assert {e for e, _ in want.values()} == {0, 1, 2}
    assert got == want  # the same data in the same order from the same weights: bit for bit


@pytest.mark.slow
def test_a_crash_between_a_ledger_part_and_its_checkpoint_duplicates_nothing(stories_data, tmp_path):
    """Killed after writing the part of steps 4-6 and before finalizing step6: what SIGKILL leaves there
    (an unfinished `checkpoint-6` and the part) resumes from step3 with steps 4-6 once."""
    (tmp_path / "killer.py").write_text(KILL_CALLBACK)
    extra = SMALL | {"checkpoints.every": 3, "checkpoints.steps": [], "checkpoints.keep_optimizer": "all"}
    full = write_recipe(tmp_path / "full.yaml", stories_data, tmp_path / "full", **extra)
    killed = write_recipe(
        tmp_path / "killed.yaml", stories_data, tmp_path / "killed", **extra, callbacks=["killer:KillAt6"]
    )
    assert train_process(full, tmp_path).returncode == 0
    first = train_process(killed, tmp_path)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    run = tmp_path / "killed"
    (run / "step6" / "checkpoint.json").unlink()  # step6 as it was before its finalization
    (run / "step6").rename(run / "checkpoint-6")
    assert [p.name for _, _, p in ledger.parts(run)][-1] == ledger.part_name(4, 6)
    assert ledger.summary(run).last_step == 3  # readers hold only parts whose checkpoint is complete

    write_recipe(killed, stories_data, run, **extra)  # the same run, without the killer
    resumed = train_process(killed, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "step3" in resumed.stderr
    assert rows(run) == rows(tmp_path / "full")


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_two_processes_write_the_ledger_of_one(stories_data, tmp_path, fused):
    """1 process (2 micro x 4 accumulation) and 2 (2 micro x 2 accumulation each): the same rows; each loss
    within LOSS_DRIFT (the weights after each step differ only in reduction order, see tests/numerics.py)."""
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    settings = SMALL | {"micro_batch_size": 2, "fused_loss": fused, "checkpoints.every": 4}
    one = write_recipe(tmp_path / "one.yaml", stories_data, tmp_path / "one", **settings)
    two = write_recipe(tmp_path / "two.yaml", stories_data, tmp_path / "two", **settings)
    train(load_recipe([one]))
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    multi = run_process(
        launch + ["--config_file", "accelerate_configs/multi-cpu.yaml", "--num_processes", "2",
                  "--main_process_port", str(free_port()), "-m", "delphi.train", str(two)]
    )  # fmt: skip
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "2 process(es) x 2 micro x 2 accumulation" in multi.stderr
    got, want = rows(tmp_path / "two"), rows(tmp_path / "one")
    assert got.keys() == want.keys() and len(want) == 12 * 8
    assert {k: e for k, (e, _) in got.items()} == {k: e for k, (e, _) in want.items()}
    assert_losses_agree(
        {k: loss for k, (_, loss) in got.items()},
        {k: loss for k, (_, loss) in want.items()},
        tolerance=LOSS_DRIFT,
        what=f"ledger loss per (step, sequence), 2 processes vs 1 ({'fused' if fused else 'plain'})",
    )
    assert [p.name for _, _, p in ledger.parts(tmp_path / "two")] == [
        p.name for _, _, p in ledger.parts(tmp_path / "one")
    ]
