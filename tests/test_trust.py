"""A rerun never changes a finished run, a bad value never costs a saved one, errors are one clear line.

Real recipes, real Trainer runs, real processes (every entry point), a real full file system.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import REPO, cli_error, free_port, run_process, write_recipe

from delphi.errors import DelphiError
from delphi.layout import REPLACED_DIR, list_checkpoints
from delphi.recipe import load_recipe
from delphi.train.run import train

pytestmark = pytest.mark.slow  # trains real runs (see `make test-fast`)
DELPHI = Path(sys.executable).with_name("delphi")  # the console script of this environment


def tree(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (what "byte-identical" compares)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def finished_run(stories_data, tmp_path) -> tuple[Path, Path]:
    """A complete 4-step tiny Llama run: (recipe file, out_dir)."""
    recipe = write_recipe(
        tmp_path / "r.yaml", stories_data, tmp_path / "run",
        checkpoints={"every": 2, "steps": [1]}, **{"training.max_steps": 4},
    )  # fmt: skip
    train(load_recipe([recipe]))
    return recipe, tmp_path / "run"


# ---- 1. a rerun of a complete run does nothing ----


def test_rerun_of_a_complete_run_changes_nothing(finished_run, caplog):
    recipe, out = finished_run
    before = tree(out)
    assert [s for s, _ in list_checkpoints(out)] == [1, 2, 4]
    with caplog.at_level("INFO", logger="delphi.train"):
        summary = train(load_recipe([recipe]))
    assert summary["complete_before"] and summary["checkpoints"] == [1, 2, 4]
    assert tree(out) == before, "a rerun must leave every file of a finished run byte-identical"
    assert "already complete: step 4 of 4" in caplog.text and str(out / "step4") in caplog.text
    # cosmetic changes (logging, a denser checkpoint list) are the same run, still complete
    train(load_recipe([recipe], ["training.logging_steps=2", "checkpoints.steps=[1,3]"]))
    assert tree(out) == before
    # --overwrite replaces only a different run: a loop that passes it stays safe to rerun
    with caplog.at_level("INFO", logger="delphi.train"):
        assert train(load_recipe([recipe]), overwrite=True)["complete_before"]
    assert tree(out) == before and "--overwrite replaces only a different run" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry",
    [[DELPHI, "train"], [sys.executable, "-m", "delphi.train"], [sys.executable, "-m", "delphi", "train"]],
)
def test_rerun_through_every_entry_point(finished_run, entry):
    recipe, out = finished_run
    before = tree(out)
    proc = run_process([*entry, recipe])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already complete" in proc.stdout and "final validation loss:" in proc.stdout
    assert "resuming" not in proc.stderr and "Writing model shards" not in proc.stderr
    assert tree(out) == before


@pytest.mark.slow
def test_rerun_through_accelerate_with_two_processes(stories_data, tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", stories_data, tmp_path / "run", micro_batch_size=2,
        checkpoints={"every": 3}, **{"training.max_steps": 3},
    )  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launch += [
        "accelerate_configs/multi-cpu.yaml",
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
    ]
    launch += ["-m", "delphi.train", recipe]
    first = run_process(launch)
    assert first.returncode == 0, first.stderr[-3000:]
    before = tree(tmp_path / "run")
    again = run_process(launch)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already complete") == 1, again.stdout  # one summary, from the main process
    assert tree(tmp_path / "run") == before


# ---- 2. everything that can fail before the first step is tried before out_dir is touched ----


@pytest.mark.parametrize(
    "override, match",
    [
        ("training.learning_rate=-0.001", r"training.learning_rate is -0.001; expected >= 0"),
        ("training.adam_beta1=1.5", r"training.adam_beta1 is 1.5; expected in \[0, 1\)"),
        ("training.adam_epsilon=-1.0", r"training.adam_epsilon is -1.0; expected >= 0"),
        ("training.weight_decay=-0.1", r"training.weight_decay is -0.1; expected >= 0"),
    ],
)
def test_bad_optimizer_values_touch_nothing(finished_run, tmp_path, override, match):
    recipe, out = finished_run
    before = tree(out)
    with pytest.raises(DelphiError, match=rf"^{match}$"):  # the line validate and suite refuse it with
        train(load_recipe([recipe], [override, "seeds.init=8"]), overwrite=True)
    assert tree(out) == before and not (out / REPLACED_DIR).exists()
    fresh = tmp_path / "fresh"
    with pytest.raises(DelphiError, match=match):
        train(load_recipe([recipe], [override, f"out_dir={fresh}"]))
    assert not fresh.exists(), "a failed start leaves a fresh out_dir as it found it"


def test_bad_values_from_the_command_line_are_one_line(finished_run):
    recipe, out = finished_run
    before = tree(out)
    for override in (
        "training.learning_rate=-0.001",
        "training.lr_scheduler_type=cosinus",
        "training.optim=adamw_nope",
    ):
        # a warmup longer than the run: its warning would only mislead next to the error
        warmup = ["--set", "training.warmup_steps=99"]
        cli = [sys.executable, "-m", "delphi", "train", recipe, "--set", override, *warmup]
        proc = run_process([*cli, "--overwrite"])
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "delphi train: error:" in proc.stderr, proc.stderr[-2000:]
        assert "never reaches" not in proc.stderr
        assert tree(out) == before


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("tensorboard") is not None, reason="tensorboard is installed"
)
def test_report_to_a_missing_integration_names_the_package(finished_run, tmp_path):
    recipe, _ = finished_run
    with pytest.raises(DelphiError, match=r"report_to asks for tensorboard.*pip install tensorboard"):
        train(load_recipe([recipe], ["training.report_to=tensorboard", f"out_dir={tmp_path / 'tb'}"]))
    assert not (tmp_path / "tb").exists()


FAIL_AT_STEP = """
from transformers import TrainerCallback

class FailAtStep(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            raise RuntimeError("failing before the first checkpoint, on purpose")
"""


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(finished_run, tmp_path, monkeypatch):
    recipe, out = finished_run
    before = tree(out)
    (tmp_path / "failcb.py").write_text(FAIL_AT_STEP)
    monkeypatch.syspath_prepend(str(tmp_path))
    other = ["seeds.init=8"]
    with pytest.raises(RuntimeError, match="on purpose"):
        train(load_recipe([recipe], [*other, "callbacks=['failcb:FailAtStep']"]), overwrite=True)
    assert tree(out) == before, "the old run is back, byte-identical"
    assert not (out / REPLACED_DIR).exists()

    summary = train(load_recipe([recipe], other), overwrite=True)
    assert summary["checkpoints"] == [1, 2, 4] and not (out / REPLACED_DIR).exists()
    assert tree(out) != before
    assert "init: 8" in (out / "recipe.yaml").read_text()


FAIL_AT_STEP_3 = FAIL_AT_STEP.replace("== 0", "== 3").replace("FailAtStep", "FailAtStep3")


def test_overwrite_resumes_a_partial_run_of_the_same_recipe(finished_run, tmp_path, monkeypatch, caplog):
    recipe, _ = finished_run
    (tmp_path / "fail3.py").write_text(FAIL_AT_STEP_3)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "partial"
    with pytest.raises(RuntimeError, match="on purpose"):  # stops after step 2's checkpoint
        train(load_recipe([recipe], [f"out_dir={out}", "callbacks=['fail3:FailAtStep3']"]))
    assert [s for s, _ in list_checkpoints(out)] == [1, 2]
    with caplog.at_level("INFO", logger="delphi.train"):
        summary = train(load_recipe([recipe], [f"out_dir={out}"]), overwrite=True)
    assert f"resuming from {out / 'step2'}" in caplog.text and summary["checkpoints"] == [1, 2, 4]
    assert "set aside" not in caplog.text and not (out / REPLACED_DIR).exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_a_fresh_out_dir(
    stories_data, tmp_path, monkeypatch
):
    (tmp_path / "failcb.py").write_text(FAIL_AT_STEP)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, out, **{"training.max_steps": 2})
    with pytest.raises(RuntimeError, match="on purpose"):
        train(load_recipe([recipe], ["callbacks=['failcb:FailAtStep']"]))
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="on purpose"):
        train(load_recipe([recipe], ["callbacks=['failcb:FailAtStep']", "seeds.init=9"]))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert train(load_recipe([recipe]))["checkpoints"] == [1, 2], "the corrected command is not refused"


SLOW_STEPS = """
import time
from transformers import TrainerCallback

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(1.0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_an_interrupted_overwrite_gives_the_old_run_back(finished_run, tmp_path, how):
    recipe, out = finished_run
    before = tree(out)
    (tmp_path / "slowcb.py").write_text(SLOW_STEPS)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "delphi", "train", str(recipe), "--overwrite", "--set", "seeds.init=8",
         "--set", "callbacks=['slowcb:Slow']", "--set", "checkpoints={every: 0, steps: []}"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (out / REPLACED_DIR).exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    time.sleep(0.5)  # training its first steps: set aside, no checkpoint before the last step
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=120)
    if how == "SIGINT":
        assert proc.returncode == 130 and "interrupted" in err, err[-3000:]
        assert tree(out) == before, "Ctrl-C: the old run is back at once"
        return
    assert proc.returncode == -signal.SIGKILL
    again = run_process([sys.executable, "-m", "delphi", "train", recipe])  # the next invocation repairs
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr[-3000:]
    assert tree(out) == before and not (out / ".delphi.lock").exists()


# ---- 3. a mistyped path reads as a missing path ----


def test_mistyped_paths_say_no_such_directory(stories_data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "run")
    shutil.copytree(stories_data / "tok", tmp_path / "ts" / "tokenizer")
    cases = {
        f"tokenizer={tmp_path}/ts/tokenizr": rf"no such directory: '{tmp_path}/ts/tokenizr' \(tokenizer\); "
        rf"did you mean '{tmp_path}/ts/tokenizer'\?",
        f"data.path={stories_data}/dta": rf"no such file or directory: '{stories_data}/dta' \(dataset\); "
        rf"did you mean '{stories_data}/data'\?",
        f"resume={tmp_path}/run/step5": rf"no such directory: '{tmp_path}/run/step5' \(resume\); "
        rf"'{tmp_path}/run' does not exist either",
        "tokenizer=./tokenizer": r"no such directory: './tokenizer'",
    }
    for override, match in cases.items():
        with pytest.raises(DelphiError, match=match):
            train(load_recipe([recipe], [override]))
    assert not (tmp_path / "run").exists()


def test_mistyped_cli_inputs_say_no_such_directory(stories_data, story_corpus, tmp_path):
    commands = [
        ["dataset", "-i", story_corpus, "-f", "story", "-t", f"{stories_data}/tokk", "-l", "16", "--out-dir", tmp_path / "d"],
        ["tokenizer", "-i", f"{story_corpus}x", "-f", "story", "-v", "300", "--out-dir", tmp_path / "t"],
        ["generate", f"{tmp_path}/no/run"],
        ["curves", f"{tmp_path}/no/run", "--out", tmp_path / "c.png"],
    ]  # fmt: skip
    for command in commands:
        proc = run_process([sys.executable, "-m", "delphi", *command])
        assert proc.returncode == 2 and "no such" in proc.stderr and "Traceback" not in proc.stderr, (
            proc.stderr
        )
        assert "Repo id must be" not in proc.stderr


def test_an_output_dir_that_cannot_be_created_is_one_line_before_any_work(
    finished_run, stories_data, story_corpus, tmp_path, capsys
):
    recipe, run = finished_run
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    commands = [
        ["train", str(recipe), "--set", f"out_dir={blocker}/run"],
        ["tokenizer", "-i", str(story_corpus), "-f", "story", "-v", "300", "--out-dir", f"{blocker}/tok"],
        ["dataset", "-i", str(story_corpus), "-f", "story", "-t", f"{stories_data}/tok", "-l", "16",
         "--out-dir", f"{blocker}/data"],
        ["curves", str(run), "--out", f"{blocker}/c.png"],
        ["corpus", "--out-dir", f"{blocker}/corpus"],
    ]  # fmt: skip
    for command in commands:
        line = cli_error(capsys, command)
        assert f"{str(blocker)!r} is a file, not a directory" in line, line
    assert blocker.read_text() == "in the way"


# ---- 4. an unreachable hub costs seconds, not a minute of noise ----


@pytest.fixture
def silent_endpoint():
    """An HTTP endpoint that accepts connections and never answers (a hub behind a black hole)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.slow
def test_an_unreachable_hub_ends_the_command_quickly_with_what_to_do(silent_endpoint, tmp_path):
    command = [
        DELPHI,
        "train",
        REPO / "recipes/stories/mamba-100k.yaml",
        "--set",
        f"out_dir={tmp_path / 'run'}",
    ]
    # the same command with the hub switched off fails at once: the difference is what the hub costs
    started = time.perf_counter()
    offline = run_process(
        command, env_extra={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, timeout=120
    )
    baseline = time.perf_counter() - started
    assert offline.returncode == 2 and "could not load tokenizer" in offline.stderr, offline.stderr[-2000:]
    env = {"HF_ENDPOINT": silent_endpoint, "HF_HUB_OFFLINE": "", "HF_HOME": str(tmp_path / "hf")}
    started = time.perf_counter()
    proc = run_process(command, env_extra=env, timeout=120)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert elapsed - baseline < 10, (
        f"the unreachable hub cost {elapsed - baseline:.1f}s ({elapsed:.1f}s in all)"
    )
    assert "could not be reached" in proc.stderr and "HF_HUB_OFFLINE=1" in proc.stderr
    assert "a local copy" in proc.stderr and "Retrying" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_unreachable_hub_stops_delphi_push_with_advice_for_push(finished_run, silent_endpoint, tmp_path):
    _, out = finished_run
    env = {"HF_ENDPOINT": silent_endpoint, "HF_HUB_OFFLINE": "", "HF_HOME": str(tmp_path / "hf")}
    proc = run_process([DELPHI, "push", out, "--repo", "org/later"], env_extra=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "could not be reached" in proc.stderr and "Nothing was uploaded" in proc.stderr
    # advice for training runs or hub inputs would not help a push
    assert "offline_ok" not in proc.stderr and "HF_HUB_OFFLINE=1" not in proc.stderr


# ---- 5. recipe callbacks under every entry point ----

NOTE_CALLBACK = """
from transformers import TrainerCallback

class Note(TrainerCallback):
    def on_train_end(self, args, state, control, **kwargs):
        open(args.output_dir + "/note.txt", "w").write("seen")
"""


@pytest.mark.slow
def test_recipe_callbacks_resolve_from_the_cwd_and_the_recipe_dir(stories_data, tmp_path):
    work, recipes = tmp_path / "work", tmp_path / "recipes"
    work.mkdir()
    recipes.mkdir()
    (work / "mycb.py").write_text(NOTE_CALLBACK)  # beside the user, who runs from `work`
    (recipes / "recipecb.py").write_text(NOTE_CALLBACK)  # beside the recipe
    for module, entry in (("mycb", [DELPHI, "train"]), ("recipecb", [DELPHI, "train"]),
                          ("mycb", [sys.executable, "-m", "delphi.train"])):  # fmt: skip
        out = tmp_path / f"run-{module}-{len(entry)}"
        recipe = write_recipe(
            recipes / f"{module}.yaml",
            stories_data,
            out,
            callbacks=[f"{module}:Note"],
            **{"training.max_steps": 1},
        )
        proc = run_process([*entry, recipe], cwd=work, env_extra={"PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (out / "note.txt").read_text() == "seen"
    bad = write_recipe(recipes / "bad.yaml", stories_data, tmp_path / "bad", callbacks=["nomod:Note"])
    proc = run_process([DELPHI, "train", bad], cwd=work)
    assert proc.returncode == 2 and f"looked in {work}, {recipes}" in proc.stderr, proc.stderr[-2000:]


# ---- 9. a full disk ----


@pytest.fixture
def small_disk(tmp_path):
    """A real 1.5 MiB tmpfs (needs root); skipped where one cannot be mounted."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_cleanly_and_the_same_command_resumes(stories_data, tmp_path, small_disk):
    keep_all = {"every": 1, "keep_optimizer": "all"}
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, small_disk / "run", checkpoints=keep_all)
    with pytest.raises(
        DelphiError,
        match=r"disk of out_dir .*run' is full \(.* MiB free\).*could not be "
        r"written and was removed; earlier checkpoints are intact.*run the same command again",
    ):
        train(load_recipe([recipe]))
    saved = [s for s, _ in list_checkpoints(small_disk / "run")]
    assert saved and saved[-1] < 12
    leftovers = [p.name for p in (small_disk / "run").iterdir() if not p.name.startswith("step")]
    leftovers = [name for name in leftovers if name != "recipe.yaml"]
    assert leftovers == [], leftovers
    for _, folder in list_checkpoints(small_disk / "run"):
        load_file(folder / "model.safetensors")  # every kept checkpoint is whole

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    assert train(load_recipe([recipe]))["checkpoints"][-1] == 12
    reference = write_recipe(tmp_path / "ref.yaml", stories_data, tmp_path / "ref", checkpoints=keep_all)
    train(load_recipe([reference]))
    a = load_file(small_disk / "run" / "step12" / "model.safetensors")
    b = load_file(tmp_path / "ref" / "step12" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run ends where an uninterrupted one does"
    shutil.rmtree(small_disk / "run")


# ---- noise ----


def test_a_warmup_longer_than_the_run_is_named(stories_data, tmp_path, caplog):
    recipe = write_recipe(
        tmp_path / "r.yaml", stories_data, tmp_path / "run", **{"training.warmup_steps": 50}
    )
    with caplog.at_level("INFO"):
        train(load_recipe([recipe], ["training.max_steps=3"]))
    assert "warmup_steps 50 is at least the run's 3 steps" in caplog.text
    assert "evaluation at step 3 took" in caplog.text
