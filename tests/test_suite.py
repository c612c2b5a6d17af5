"""`delphi suite`: recipes x seeds trained as real `delphi train` processes, skipped when complete,
resumed when partial, stopped cleanly by Ctrl-C, and the same through submitit's local executor.
Also `delphi.run_status` (the one home of "is this run complete?") and the run lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny import MODEL, REPO, run_process, write_recipe

from delphi.errors import DelphiError
from delphi.layout import read_checkpoint_meta
from delphi.recipe import load_recipe
from delphi.run_status import (
    ATTEMPT_NAME,
    DONE,
    FAILED,
    PENDING,
    RESUMABLE,
    RUNNING,
    hold_run_lock,
    is_done,
    is_running,
    lock_holder,
    run_status,
)
from delphi.suite import plan_suite, run_suite, suite_status
from delphi.suite.local import cpu_cores, plan_layout

SLOW_CALLBACK = """
import time
from transformers import TrainerCallback

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.3)
"""


def delphi(args: list[str], cwd: Path, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """`python -m delphi ARGS` in `cwd`, with this checkout (and `cwd`, for test callbacks) importable;
    `env`: more environment variables."""
    return run_process([sys.executable, "-m", "delphi", *args], env, cwd=cwd, pythonpath=[cwd], **kw)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def status_rows(table: str) -> dict[str, list[str]]:
    """The `--status` table's rows by run name, split into cells."""
    lines = table.splitlines()[2:]
    return {line.split()[0]: line.split() for line in lines[: lines.index("")]}


# ---------------------------------------------------------------- planning (no training)


@pytest.mark.slow
def test_seeds_expand_names_out_dirs_and_seeds(stories_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suite").mkdir()
    write_recipe(tmp_path / "suite" / "a.yaml", stories_data, "out/{name}")
    write_recipe(tmp_path / "suite" / "b.yaml", stories_data, "runs/fixed")  # no {name} placeholder
    (tmp_path / "suite" / "base-notes.yaml").write_text("not: a recipe\n")  # base*.yaml: skipped

    as_written = plan_suite(["suite"])
    assert [(r.name, r.out_dir, r.seed, r.overrides) for r in as_written] == [
        ("a", "out/a", None, ()),
        ("b", "runs/fixed", None, ()),
    ]

    runs = plan_suite(["suite"], seeds=[0, 2], overrides=["training.max_steps=3"])
    assert [(r.name, r.recipe_name, r.seed, r.out_dir) for r in runs] == [
        ("a-seed0", "a", 0, "out/a-seed0"),
        ("a-seed2", "a", 2, "out/a-seed2"),
        ("b-seed0", "b", 0, "runs/fixed-seed0"),
        ("b-seed2", "b", 2, "runs/fixed-seed2"),
    ]
    for run in runs:
        # the run's own command line gives exactly this recipe: what `delphi train` will load
        assert run.command()[:5] == [sys.executable, "-m", "delphi", "train", run.recipe_file]
        recipe = load_recipe([run.recipe_file], list(run.overrides))
        assert (recipe.name, recipe.out_dir) == (run.name, run.out_dir)
        assert (recipe.seeds.init, recipe.seeds.data) == (7 + run.seed, 11 + run.seed)
        assert recipe.training["max_steps"] == run.max_steps == 3

    assert [r.name for r in plan_suite(["suite"], only=["a*"], seeds=[1])] == ["a-seed1"]
    with pytest.raises(DelphiError, match=r"--only 'zz\*' matches no recipe"):
        plan_suite(["suite"], only=["zz*"])


@pytest.mark.slow
def test_bad_suites_are_refused_before_anything_starts(stories_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").mkdir()
    write_recipe(tmp_path / "s" / "a.yaml", stories_data, "out/same")
    write_recipe(tmp_path / "s" / "b.yaml", stories_data, "out/same")
    with pytest.raises(DelphiError, match="runs a and b would share out_dir 'out/same'"):
        plan_suite(["s"])
    with pytest.raises(DelphiError, match="runs a-seed0 and b-seed0 would share out_dir"):
        plan_suite(["s"], seeds=[0])

    write_recipe(tmp_path / "s" / "b.yaml", stories_data, "out/{name}", batch_sise=8)
    with pytest.raises(DelphiError, match=r"1 recipe\(s\) of the suite have problems; nothing was started"):
        run_suite(["s"])
    assert not (tmp_path / "out").exists()
    assert [r.name for r in plan_suite(["s"], only=["a"])] == ["a"]  # --only leaves the broken one out

    with pytest.raises(DelphiError, match="--seeds 1 1 repeats a seed"):
        plan_suite(["s"], only=["a"], seeds=[1, 1])
    with pytest.raises(DelphiError, match="--executor 'pbs' is not one of"):
        run_suite(["s"], only=["a"], executor="pbs")
    with pytest.raises(DelphiError, match="--devices 'gpu0'"):
        plan_layout(2, jobs=None, devices="gpu0", runs_per_device=1, devices_per_run=1)
    with pytest.raises(DelphiError, match="does not divide the 3 GPU"):
        plan_layout(2, jobs=None, devices="0,1,2", runs_per_device=1, devices_per_run=2, visible=3)


def test_device_layout():
    four = plan_layout(20, jobs=None, devices="0,1,2,3", runs_per_device=2, devices_per_run=1, visible=4)
    assert four.slots == [[0], [1], [2], [3]] * 2 and four.processes == 1
    pairs = plan_layout(20, jobs=None, devices="0,1,2,3", runs_per_device=1, devices_per_run=2, visible=4)
    assert pairs.slots == [[0, 1], [2, 3]] and pairs.processes == 2
    three = plan_layout(3, jobs=8, devices="0,1,2,3", runs_per_device=2, devices_per_run=1, visible=4)
    assert len(three.slots) == 3
    cpu = plan_layout(8, jobs=2, devices="cpu", runs_per_device=1, devices_per_run=1)
    assert cpu.slots == [None, None] and cpu.threads == max(1, cpu_cores() // 2)
    assert (
        plan_layout(8, jobs=None, devices="cpu", runs_per_device=1, devices_per_run=1).threads == cpu_cores()
    )


def bare_suite(root: Path, **overrides) -> None:
    """root/recipes/{a,b}.yaml on stand-in inputs: empty folders root/inputs/{tok,data}, enough for every
    check made before a run starts (a run that started would fail on them); `overrides` go to b.yaml."""
    (root / "inputs" / "tok").mkdir(parents=True)
    (root / "inputs" / "data").mkdir()
    (root / "recipes").mkdir()
    write_recipe(root / "recipes" / "a.yaml", root / "inputs", "out/{name}")
    write_recipe(root / "recipes" / "b.yaml", root / "inputs", "out/{name}", **overrides)


def test_gpu_ids_must_name_a_visible_gpu(tmp_path):
    from delphi.suite.local import parse_devices

    assert parse_devices("1,0", visible=2) == [1, 0]
    assert parse_devices("auto", visible=0) is None and parse_devices("cpu", visible=2) is None
    assert parse_devices("auto", visible=2) == [0, 1]
    with pytest.raises(DelphiError, match=r"--devices '1,7' names GPU 7, but this process sees 2 GPU\(s\)"):
        parse_devices("1,7", visible=2)
    bare_suite(tmp_path)
    done = delphi(["suite", "recipes", "--devices", "0"], tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "delphi suite: error: --devices '0' names GPU 0, but no GPU is visible here "
        "(CUDA_VISIBLE_DEVICES is empty); expected --devices cpu or auto"
    )
    assert done.stdout == "" and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, error",
    [
        ({"devices": "gpu"}, "--devices 'gpu' is not auto, cpu or a list of GPU ids"),
        ({"runs_per_device": 0}, "--runs-per-device 0 must be at least 1"),
        ({"devices_per_run": 0}, "--devices-per-run 0 must be at least 1"),
        ({"jobs": 0, "executor": "submitit-local"}, "--jobs 0 must be at least 1"),
    ],
)
def test_suite_flags_are_checked_before_the_plan_is_printed(tmp_path, monkeypatch, flags, error):
    monkeypatch.chdir(tmp_path)
    bare_suite(tmp_path)
    lines = []
    with pytest.raises(DelphiError, match=error):
        run_suite(["recipes"], echo=lines.append, **flags)
    assert lines == [] and not (tmp_path / "out").exists()


def test_every_run_is_checked_before_any_starts(tmp_path, monkeypatch):
    from delphi.suite.check import run_problems

    monkeypatch.chdir(tmp_path)
    bare_suite(tmp_path, **{"training.learning_rate": -1, "training.adam_beta2": 1.0})
    lines = []
    with pytest.raises(DelphiError) as refused:
        run_suite(["recipes"], devices="cpu", echo=lines.append)
    assert str(refused.value) == (
        "2 problem(s) in the runs of the suite; nothing was started:\n"
        "b (recipes/b.yaml): training.learning_rate is -1; expected >= 0\n"
        "b (recipes/b.yaml): training.adam_beta2 is 1.0; expected in [0, 1)"
    )
    assert lines == [] and not (tmp_path / "out").exists()

    (tmp_path / "recipes" / "b.yaml").unlink()
    tok, data = tmp_path / "inputs" / "tk", "inputs/dat"
    write_recipe(
        tmp_path / "recipes" / "b.yaml", tmp_path / "inputs", "out/{name}",
        tokenizer=str(tok), resume="inputs/data", **{"data.path": data},
    )  # fmt: skip
    with pytest.raises(DelphiError) as refused:
        run_suite(["recipes"], devices="cpu", devices_per_run=3, echo=lines.append)
    problems = str(refused.value).splitlines()
    assert problems[0] == "5 problem(s) in the runs of the suite; nothing was started:"
    assert problems[1].startswith("a (recipes/a.yaml): batch_size 8 cannot be split evenly over world size 3")
    assert problems[2].startswith(
        f"b (recipes/b.yaml): no such directory: {str(tok)!r} (tokenizer); did you mean"
    )
    assert problems[3].startswith(f"b (recipes/b.yaml): no such file or directory: {data!r} (dataset)")
    assert problems[4].startswith("b (recipes/b.yaml): batch_size 8 cannot be split")
    assert problems[5] == (
        "b (recipes/b.yaml): resume 'inputs/data' is not a complete checkpoint with optimizer state "
        "(expected a step folder holding checkpoint.json and optimizer.pt)"
    )
    assert lines == [] and not (tmp_path / "out").exists()
    # an out_dir that cannot be created: found for every run before any starts
    broken = (tmp_path / "recipes" / "b.yaml").read_text()
    write_recipe(tmp_path / "recipes" / "b.yaml", tmp_path / "inputs", "out/{name}")
    (tmp_path / "out").write_text("a file in the way")
    with pytest.raises(DelphiError) as refused:
        run_suite(["recipes"], devices="cpu", echo=lines.append)
    assert str(refused.value).splitlines()[1:] == [
        f"{name} (recipes/{name}.yaml): out_dir 'out/{name}' cannot be created: 'out' is a file, not a directory"
        for name in ("a", "b")
    ]
    (tmp_path / "out").unlink()
    (tmp_path / "recipes" / "b.yaml").write_text(broken)
    # a run that goes on from its own checkpoint does not read `resume:` (as `delphi train` does not)
    b = plan_suite(["recipes"], only=["b"])[0]
    assert len(run_problems(b, processes=1, resumes=False)) == 3
    assert len(run_problems(b, processes=1, resumes=True)) == 2


def test_missing_submitit_names_the_extra(monkeypatch):
    from delphi.suite.slurm import make_executor

    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed: `import submitit` fails
    with pytest.raises(DelphiError, match=r"pip install 'delphi\[slurm\]'"):
        make_executor(
            "slurm",
            folder="x",
            partition="p",
            gpus_per_job=1,
            cpus_per_job=None,
            time_min=5,
            parallelism=None,
        )


# ---------------------------------------------------------------- run_status and the run lock


@pytest.mark.slow
def test_run_lock_marks_a_run_running_and_dies_with_its_process(tmp_path):
    out = tmp_path / "run"
    assert not is_running(out) and run_status(out).state == PENDING
    with hold_run_lock(out):
        assert is_running(out) and lock_holder(out) == os.getpid()
        with pytest.raises(
            DelphiError, match=rf"out_dir '.*run' is being trained by another process \(pid {os.getpid()}\)"
        ):
            with hold_run_lock(out, wait=0.2):
                pass
    assert not is_running(out)

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from delphi.run_status import hold_run_lock\n"
         f"with hold_run_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        status = run_status(out)
        assert (status.state, status.holder_pid) == (RUNNING, holder.pid)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not is_running(out), "a killed trainer must not leave a stale lock"


@pytest.mark.slow
def test_train_holds_the_lock_and_run_status_reads_the_run(stories_data, tmp_path):
    import torch
    from transformers import TrainerCallback

    from delphi.train.run import train

    out = tmp_path / "run"
    seen = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(lock_holder(out))

    recipe = load_recipe(
        [write_recipe(tmp_path / "r.yaml", stories_data, out, checkpoints={"every": 5, "steps": [1]})]
    )
    train(recipe, callbacks=[Probe()])
    assert seen and set(seen) == {os.getpid()}
    assert not is_running(out)

    context = json.loads((out / "step12" / "run_context.json").read_text())
    assert context["torch_num_threads"] == torch.get_num_threads()
    status = run_status(out)
    assert (status.state, status.step, status.max_steps, status.checkpoints) == (DONE, 12, 12, [1, 5, 10, 12])
    assert status.eval_loss == read_checkpoint_meta(out / "step12")["eval_loss"]
    assert status.tokens_per_second > 0 and status.mfu is None
    assert is_done(out) and not is_done(out, max_steps=20)

    longer = run_status(out, max_steps=20)  # asked to go further: it can resume from step12
    assert (longer.state, longer.resumable_from) == (RESUMABLE, str(out / "step12"))

    other = tmp_path / "other"
    with hold_run_lock(other):  # a second trainer of the same out_dir is refused, before any step
        with pytest.raises(
            DelphiError, match=rf"'{other}' is being trained by another process \(pid {os.getpid()}\)"
        ):
            train(load_recipe([tmp_path / "r.yaml"], [f"out_dir={other}"]))
    assert not list(other.glob("step*"))

    import shutil

    shutil.rmtree(out / "step12")  # the older checkpoints have no optimizer state (keep_optimizer: latest)
    assert run_status(out).state == PENDING


@pytest.mark.slow
def test_status_counts_the_step_branches_published_on_the_hub(
    hub_server, stories_data, tmp_path, monkeypatch
):
    from huggingface_hub import HfApi

    from delphi.suite.status import format_status, status_rows

    api = HfApi()
    api.create_repo("org/tiny-a")
    for branch in ("step1", "step2", "step4"):
        api.create_branch("org/tiny-a", branch=branch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").mkdir()
    write_recipe(tmp_path / "s" / "a.yaml", stories_data, "out/{name}", hub={"repo": "org/tiny-a"})
    write_recipe(tmp_path / "s" / "b.yaml", stories_data, "out/{name}", hub={"repo": "org/never-made"})
    write_recipe(tmp_path / "s" / "c.yaml", stories_data, "out/{name}")
    rows = status_rows(plan_suite(["s"]))
    assert [(r["hub_branches"], r["state"], r["step"], r["parameters"]) for r in rows] == [
        (3, PENDING, 0, 14_640),  # before any checkpoint: parameters from the model built on meta
        (None, PENDING, 0, 14_640),
        (None, PENDING, 0, 14_640),
    ]
    table = format_status(rows)
    assert table.splitlines()[0].split()[-2:] == ["hub", "branches"]
    assert [line.split()[-1] for line in table.splitlines()[2:5]] == ["3", "?", "-"]


# ---------------------------------------------------------------- a whole suite, through the CLI


@pytest.fixture(scope="module")
def trained_suite(stories_data, tmp_path_factory):
    """2 good recipes and 1 that fails only when it starts (a model vocabulary smaller than the
    tokenizer's: no check before the start loads a tokenizer), x seeds 0 1, --jobs 2: (root, process)."""
    root = tmp_path_factory.mktemp("suite")
    (root / "recipes").mkdir()
    write_recipe(root / "recipes" / "a.yaml", stories_data, "out/{name}")
    write_recipe(root / "recipes" / "b.yaml", stories_data, "out/{name}", model={**MODEL, "hidden_size": 24})
    write_recipe(
        root / "recipes" / "broken.yaml", stories_data, "out/{name}", model={**MODEL, "vocab_size": 256}
    )
    done = delphi(["suite", "recipes", "--seeds", "0", "1", "--jobs", "2"], root, timeout=1200)
    return root, done


GOOD = ["a-seed0", "a-seed1", "b-seed0", "b-seed1"]
BROKEN = ["broken-seed0", "broken-seed1"]


@pytest.mark.slow
def test_suite_trains_every_run_and_a_failure_stops_none_of_the_others(trained_suite):
    root, done = trained_suite
    assert done.returncode == 2, done.stdout + done.stderr
    assert "2 run(s) failed: broken-seed0, broken-seed1" in done.stderr
    assert (
        "the tokenizer has 384 tokens but the model's vocab_size is 256" in done.stderr
    )  # their logs' tails
    assert "4 trained, 0 already complete, 2 failed" in done.stdout
    for name in GOOD:
        out = root / "out" / name
        assert run_status(out).state == DONE
        saved = yaml.safe_load((out / "step12" / "recipe.yaml").read_text())
        k = int(name[-1])
        assert (saved["name"], saved["seeds"]) == (name, {"init": 7 + k, "data": 11 + k})
        context = json.loads((out / "step12" / "run_context.json").read_text())
        assert context["torch_num_threads"] == max(1, cpu_cores() // 2)  # 2 at once share the cores
        assert context["world_size"] == 1
        assert "==== delphi suite" in (out / "train.log").read_text()
    for name in BROKEN:
        attempt = json.loads((root / "out" / name / ATTEMPT_NAME).read_text())
        assert (attempt["outcome"], attempt["returncode"]) == (FAILED, 2)
        assert run_status(root / "out" / name).state == FAILED


@pytest.mark.slow
def test_bad_flags_are_refused_on_a_complete_suite_too(trained_suite):
    root, _ = trained_suite
    complete = ["suite", "recipes", "--seeds", "0", "1", "--only", "a"]
    before = tree_bytes(root / "out")
    done = delphi([*complete, "--runs-per-device", "0"], root)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == "delphi suite: error: --runs-per-device 0 must be at least 1"
    assert tree_bytes(root / "out") == before


@pytest.mark.slow
def test_a_suite_run_is_bitwise_identical_to_delphi_train_alone(trained_suite):
    root, _ = trained_suite
    threads = json.loads((root / "out" / "a-seed1" / "step12" / "run_context.json").read_text())[
        "torch_num_threads"
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    alone = subprocess.run(
        [sys.executable, "-m", "delphi", "train", "recipes/a.yaml", "--set", "seeds.init=8", "--set", "seeds.data=12",
         "--set", "out_dir=alone"],
        capture_output=True, text=True, env=env, cwd=root,
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    for step in (1, 2, 4, 5, 10, 12):
        suite_weights = (root / "out" / "a-seed1" / f"step{step}" / "model.safetensors").read_bytes()
        assert (root / "alone" / f"step{step}" / "model.safetensors").read_bytes() == suite_weights, step


@pytest.mark.slow
def test_rerun_skips_complete_runs_untouched_and_status_shows_every_run(trained_suite, monkeypatch):
    root, _ = trained_suite
    before = {name: tree_bytes(root / "out" / name) for name in GOOD}
    again = delphi(["suite", "recipes", "--seeds", "0", "1", "--jobs", "2"], root, timeout=600)
    assert again.returncode == 2
    assert "4 complete (skipped), 2 to train" in again.stdout
    assert not any(f"{name}: started" in again.stdout for name in GOOD)
    for name in GOOD:  # not a byte changed: no process was started for them (log and attempt untouched)
        assert tree_bytes(root / "out" / name) == before[name], name
    assert (root / "out" / "broken-seed0" / "train.log").read_text().count("==== delphi suite") == 2

    monkeypatch.chdir(root)
    table = suite_status(["recipes"], seeds=[0, 1])
    rows = status_rows(table)
    assert sorted(rows) == sorted(GOOD + BROKEN)
    loss = read_checkpoint_meta(root / "out" / "b-seed1" / "step12")["eval_loss"]
    assert rows["b-seed1"][1:4] == ["Llama", "22,536", "12/12"] and rows["b-seed1"][4] == f"{loss:.4f}"
    assert rows["b-seed1"][6:] == ["-", DONE]  # MFU unknown on a CPU
    assert rows["broken-seed0"][3:] == ["0/12", "-", "-", "-", FAILED]
    assert table.splitlines()[-1] == "6 run(s): 4 done, 2 failed"
    assert "--status" not in again.stderr


@pytest.mark.slow
def test_ctrl_c_stops_every_run_cleanly_and_a_rerun_resumes(stories_data, tmp_path, monkeypatch):
    (tmp_path / "slowcb.py").write_text(SLOW_CALLBACK)
    (tmp_path / "recipes").mkdir()
    write_recipe(
        tmp_path / "recipes" / "s.yaml", stories_data, "out/{name}",
        callbacks=["slowcb:Slow"], **{"training.max_steps": 40},
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    args = [sys.executable, "-m", "delphi", "suite", "recipes", "--seeds", "0", "1", "--jobs", "2"]
    suite = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 300
        while not (tmp_path / "out" / "s-seed0" / "step5").exists():
            assert suite.poll() is None and time.time() < deadline, suite.communicate()
            time.sleep(0.1)
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))  # the recipe names slowcb:Slow
        table = suite_status(["recipes"], seeds=[0, 1])
        assert status_rows(table)["s-seed0"][-1] == RUNNING, table
        suite.send_signal(signal.SIGINT)
        stdout, stderr = suite.communicate(timeout=120)
    finally:
        if suite.poll() is None:
            suite.kill()
    assert suite.returncode == 130, stdout + stderr
    assert "delphi suite: interrupted" in stderr
    for name in ("s-seed0", "s-seed1"):
        out = tmp_path / "out" / name
        assert not is_running(out), "the children must have exited"
        assert json.loads((out / ATTEMPT_NAME).read_text())["outcome"] == "interrupted"
        assert "delphi train: interrupted" in (out / "train.log").read_text()  # SIGINT, a clean exit
    assert run_status(tmp_path / "out" / "s-seed0").state == RESUMABLE
    step_before = run_status(tmp_path / "out" / "s-seed0").step
    assert step_before < 40

    again = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resume from a checkpoint" in again.stdout
    log = (tmp_path / "out" / "s-seed0" / "train.log").read_text()
    assert f"resuming from out/s-seed0/step{step_before}" in log
    assert all(run_status(tmp_path / "out" / n).state == DONE for n in ("s-seed0", "s-seed1"))


@pytest.mark.slow
def test_submitit_local_executor_runs_jobs_requeues_a_preempted_one_and_a_resubmission_skips_them(
    stories_data, tmp_path
):
    (tmp_path / "slowcb.py").write_text(SLOW_CALLBACK)
    (tmp_path / "recipes").mkdir()
    write_recipe(
        tmp_path / "recipes" / "a.yaml", stories_data, "out/{name}",
        callbacks=["slowcb:Slow"], **{"training.max_steps": 24},
    )  # fmt: skip
    args = [sys.executable, "-m", "delphi", "suite", "recipes", "--seeds", "0", "1", "--executor", "submitit-local",
            "--gpus-per-job", "0", "--time", "20", "--submitit-dir", "jobs"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    suite = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 300
        while not (tmp_path / "out" / "a-seed0" / "step5").exists():
            assert suite.poll() is None and time.time() < deadline, suite.communicate()
            time.sleep(0.1)
        # preempt seed 0's job as SLURM would: SIGUSR2 to the job process (the parent of its delphi train)
        child = json.loads((tmp_path / "out" / "a-seed0" / ATTEMPT_NAME).read_text())["pid"]
        job_process = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(job_process, signal.SIGUSR2)
        stdout, stderr = suite.communicate(timeout=900)
    finally:
        if suite.poll() is None:
            suite.kill()
    assert suite.returncode == 0, stdout + stderr
    assert stdout.count("submitted as job") == 2
    job_dirs = sorted(p.name for p in (tmp_path / "jobs").iterdir() if p.name.isdigit())
    assert len(job_dirs) == 2 and all(list((tmp_path / "jobs" / d).glob("*_result.pkl")) for d in job_dirs)
    job_logs = "".join(p.read_text() for p in (tmp_path / "jobs").rglob("*_log.out"))
    assert "Requeued job" in job_logs
    log = (tmp_path / "out" / "a-seed0" / "train.log").read_text()
    assert "delphi train: interrupted" in log and "resuming from out/a-seed0/step" in log
    for name in ("a-seed0", "a-seed1"):
        out = tmp_path / "out" / name
        assert run_status(out).state == DONE
        assert json.loads((out / ATTEMPT_NAME).read_text())["executor"] == "submitit-local"

    before = tree_bytes(tmp_path / "out")
    again = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 complete (skipped), 0 to train" in again.stdout and "submitted" not in again.stdout
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir() if p.name.isdigit()) == job_dirs
    assert tree_bytes(tmp_path / "out") == before


@pytest.mark.slow
def test_a_run_over_two_devices_is_launched_through_accelerate(stories_data, tmp_path):
    (tmp_path / "recipes").mkdir()
    write_recipe(
        tmp_path / "recipes" / "a.yaml",
        stories_data,
        "out/{name}",
        micro_batch_size=2,
        **{"training.max_steps": 4},
    )
    done = delphi(["suite", "recipes", "--devices", "cpu", "--devices-per-run", "2"], tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    context = json.loads((tmp_path / "out" / "a" / "step4" / "run_context.json").read_text())
    assert context["world_size"] == 2
    assert (
        "global batch 8 = 2 process(es) x 2 micro x 2 accumulation"
        in (tmp_path / "out" / "a" / "train.log").read_text()
    )


def test_devices_are_taken_from_the_allocation_the_suite_was_given():
    from delphi.suite.launch import visible_devices

    assert visible_devices([0, 1], {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_devices([1], {"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}) == ["GPU-bb"]
    assert visible_devices([0, 1], {}) == ["0", "1"]
