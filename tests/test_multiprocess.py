"""Several processes and several machines, for real: gloo on the CPU, launched as users launch them.

Two `accelerate launch` invocations on one host stand in for two machines; separate working directories
with a relative `out_dir` stand in for machines with separate disks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from numerics import assert_losses_agree, threads_under_test
from tiny import free_port, write_recipe

from delphi.layout import list_checkpoints, read_checkpoint_meta
from delphi.recipe import load_recipe
from delphi.train.run import train

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
MULTI_CPU = ["--config_file", str(REPO / "accelerate_configs" / "multi-cpu.yaml")]


def multi_cpu() -> list[str]:
    """The shipped multi-cpu config, on a port of its own (not accelerate's default 29500)."""
    return [*MULTI_CPU, "--main_process_port", str(free_port())]


def env(**extra) -> dict:
    threads = str(threads_under_test())
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": threads, **extra}


def run(args: list, cwd=REPO, timeout=600, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env(**extra), cwd=cwd, timeout=timeout
    )


def step_losses(out_dir: Path) -> dict[int, float]:
    state = json.loads((list_checkpoints(out_dir)[-1][1] / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def two_machines(recipe: Path, cwds: tuple[Path, Path], timeout=600) -> list[subprocess.CompletedProcess]:
    """`accelerate launch` twice, as machine 0 and machine 1 (one process each) of one run."""
    port = free_port()
    procs = []
    for rank, cwd in enumerate(cwds):
        machine = ["--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"]
        machine += ["--main_process_port", str(port), "--num_processes", "2"]
        procs.append(
            subprocess.Popen(
                [*LAUNCH, *MULTI_CPU, *machine, "-m", "delphi.train", str(recipe)],
                cwd=cwd,
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def test_fsdp_asked_for_on_a_cpu_is_refused_before_training(stories_data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "run", micro_batch_size=2)
    fsdp = run([*LAUNCH, "--config_file", REPO / "accelerate_configs/fsdp.yaml", "--num_processes", "2",
                "-m", "delphi.train", recipe])  # fmt: skip
    assert fsdp.returncode != 0
    assert fsdp.stderr.count("FSDP was asked for (the accelerate config") == 1, fsdp.stderr[-3000:]
    assert "would train as plain data parallelism (DDP) over 2 processes" in fsdp.stderr
    assert "drop FSDP from the accelerate config" in fsdp.stderr
    assert not (tmp_path / "run").exists()
    single = run([sys.executable, "-m", "delphi", "train", recipe, "--set", "training.fsdp=full_shard"])
    assert single.returncode == 2 and "FSDP was asked for (training.fsdp)" in single.stderr, single.stderr[
        -3000:
    ]
    assert "remove training.fsdp from the recipe" in single.stderr
    assert "Traceback" not in single.stderr and not (tmp_path / "run").exists()


@pytest.mark.numerics
def test_two_machines_on_one_host_train_and_resume(stories_data, tmp_path):
    """A shared out_dir: two machines train like one process, and a killed run resumes bitwise."""
    keep_all = {"every": 5, "steps": [1, 2, 4], "keep_optimizer": "all"}
    recipe = write_recipe(
        tmp_path / "r.yaml", stories_data, tmp_path / "two", micro_batch_size=2, checkpoints=keep_all
    )
    first = two_machines(recipe, (tmp_path, tmp_path))
    assert [p.returncode for p in first] == [0, 0], first[0].stderr[-2000:] + first[1].stderr[-2000:]
    assert "checkpoints (6)" in first[0].stdout
    assert "final validation loss" not in first[1].stdout, "only the main process prints the run's summary"
    one = write_recipe(tmp_path / "one.yaml", stories_data, tmp_path / "one")
    train(load_recipe([one]))
    losses_one, losses_two = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert_losses_agree(losses_two, losses_one, what="per-step loss, two machines vs one process")

    # take the run back to step 5 (as if killed after it) and let the two machines finish it again
    for step, folder in list_checkpoints(tmp_path / "two"):
        if step > 5:
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    assert read_checkpoint_meta(tmp_path / "two" / "step5")["step"] == 5
    resumed = two_machines(recipe, (tmp_path, tmp_path))
    assert [p.returncode for p in resumed] == [0, 0], resumed[0].stderr[-3000:]
    assert "resuming from" in resumed[0].stderr
    assert step_losses(tmp_path / "two") == losses_two


def test_machines_with_separate_out_dirs_are_refused_on_every_machine(stories_data, tmp_path):
    machines = (tmp_path / "machine0", tmp_path / "machine1")
    for folder in machines:
        folder.mkdir()
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, Path("run"), micro_batch_size=2)  # relative
    started = time.perf_counter()
    results = two_machines(recipe, machines, timeout=300)
    assert time.perf_counter() - started < 120
    for proc in results:
        assert proc.returncode != 0
        assert "is not shared" in proc.stderr and "filesystem all machines share" in proc.stderr, proc.stderr[
            -3000:
        ]
    assert [list(folder.iterdir()) for folder in machines] == [[], []], "nothing may be written"


STOP_AT_5 = """
from transformers import TrainerCallback

class StopAt5(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5:
            control.should_training_stop = True
"""


@pytest.mark.numerics
def test_a_run_resumes_across_process_layouts(stories_data, tmp_path):
    """2 processes -> 1 and 1 -> 2: the same data order, losses within 1e-5 of an uninterrupted run."""
    (tmp_path / "stopcb.py").write_text(STOP_AT_5)
    full = write_recipe(tmp_path / "full.yaml", stories_data, tmp_path / "full")
    train(load_recipe([full]))
    reference = step_losses(tmp_path / "full")
    paths = {"PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    for first, second in ((2, 1), (1, 2)):
        out = tmp_path / f"run{first}{second}"
        recipe = write_recipe(tmp_path / f"r{first}{second}.yaml", stories_data, out, micro_batch_size=2)
        for procs, extra in ((first, ["--set", "callbacks=['stopcb:StopAt5']"]), (second, [])):
            command = (
                [*LAUNCH, *multi_cpu(), "--num_processes", "2", "-m", "delphi.train"]
                if procs == 2
                else [sys.executable, "-m", "delphi", "train"]
            )
            done = run([*command, recipe, *extra], **paths)
            assert done.returncode == 0, done.stderr[-3000:]
        assert "resuming from" in done.stderr and f"global batch 8 = {second} process(es)" in done.stderr
        assert_losses_agree(step_losses(out), reference, what=f"per-step loss, {first} -> {second} processes")


def test_changing_only_execution_settings_resumes_the_run(stories_data, tmp_path):
    keep_all = {"every": 5, "steps": [1, 2, 4], "keep_optimizer": "all"}
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "run", checkpoints=keep_all)
    train(load_recipe([recipe]))
    for _, folder in list_checkpoints(tmp_path / "run")[3:]:  # back to a partial run at step 4
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    summary = train(
        load_recipe([recipe], ["training.ddp_timeout=7200", "training.ddp_find_unused_parameters=true"])
    )
    assert not summary["complete_before"] and summary["checkpoints"] == [1, 2, 4, 5, 10, 12]


def test_twenty_two_process_runs_all_exit_cleanly(stories_data, tmp_path):
    failures = []
    for i in range(20):
        recipe = write_recipe(
            tmp_path / f"r{i}.yaml", stories_data, tmp_path / f"run{i}", micro_batch_size=2,
            checkpoints={"every": 2}, **{"training.max_steps": 2},
        )  # fmt: skip
        done = run([*LAUNCH, *multi_cpu(), "--num_processes", "2", "-m", "delphi.train", recipe], timeout=300)
        if done.returncode != 0 or "terminate called" in done.stderr:
            failures.append((i, done.returncode, done.stderr[-1500:]))
    assert failures == [], failures


SLOW_STEPS = """
import time
from transformers import TrainerCallback

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.3)
"""


def test_a_dead_peer_ends_the_run_quickly_with_a_clear_message(stories_data, tmp_path):
    (tmp_path / "slowcb.py").write_text(SLOW_STEPS)
    recipe = write_recipe(
        tmp_path / "r.yaml", stories_data, tmp_path / "run", micro_batch_size=2, callbacks=["slowcb:Slow"],
        **{"training.max_steps": 200},
    )  # fmt: skip
    proc = subprocess.Popen(
        [*LAUNCH, *multi_cpu(), "--num_processes", "2", "-m", "delphi.train", str(recipe)],
        cwd=REPO, env=env(PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (tmp_path / "run" / "step2").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    workers = _workers_of(proc.pid)
    rank1 = next(pid for pid, environ in workers.items() if environ.get("RANK") == "1")
    os.kill(rank1, signal.SIGKILL)
    started = time.perf_counter()
    _, err = proc.communicate(timeout=300)
    assert time.perf_counter() - started < 120, "a dead peer must not leave the run hanging"
    assert proc.returncode != 0
    assert "process 1" in err or "rank: 1" in err, err[-3000:]
    assert [s for s, _ in list_checkpoints(tmp_path / "run")][-1] >= 2  # what was saved is still there


def _workers_of(pid: int) -> dict[int, dict]:
    """{pid: environment} of the python processes below `pid` that are training workers (have RANK)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().split()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parents = {int(stat[3])}
        if pid in parents or _descends(int(entry.name), pid):
            values = dict(e.decode(errors="replace").split("=", 1) for e in environ if b"=" in e)
            if "RANK" in values:
                found[int(entry.name)] = values
    return found


def _descends(child: int, ancestor: int) -> bool:
    while child > 1:
        try:
            child = int(Path(f"/proc/{child}/stat").read_text().split()[3])
        except OSError:
            return False
        if child == ancestor:
            return True
    return False
