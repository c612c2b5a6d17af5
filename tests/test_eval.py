"""`delphi eval` on tiny real runs: the harness' own numbers for each (run, checkpoint, task), a tidy table and
plots with seed bands, resumption after a real SIGKILL, recomputation when the settings change, the bad
inputs refused in one line, hub branches, and the same tasks inside training (1 and 2 real processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny import ENV, MODEL, REPO, cli_error, free_port, run_process, write_recipe

from delphi.evaluate.harness import BUILTIN_TASKS
from delphi.evaluate.minimal_pairs import PHENOMENA
from delphi.evaluate.sweep import COLUMNS, Options, run_sweep, task_curves
from delphi.layout import EVAL_CELLS_DIR, list_checkpoints, read_checkpoint_meta

TASKS = ["delphi_bpb", "delphi_minimal_pairs"]
# long enough a context that each story of delphi_bpb is one window of the harness (tests/test_eval_tasks.py)
WIDE_CONTEXT = {**MODEL, "max_position_embeddings": 512}


@pytest.fixture(scope="module")
def seeds_dir(stories_data, tmp_path_factory) -> Path:
    """A directory of two seeds of one recipe, as `delphi suite --seeds 0 1` names them (checkpoints 1-8)."""
    from test_logprobs import train_tiny_run

    root = tmp_path_factory.mktemp("eval-suite")
    for k in range(2):
        train_tiny_run(
            root, stories_data, f"tiny-seed{k}", model=WIDE_CONTEXT, seeds={"init": 7 + k, "data": 11 + k}
        )
    for recipe in root.glob("*.yaml"):
        recipe.unlink()
    return root


def harness_numbers(folder: Path, tasks: list[str], limit: int, batch_size: int) -> dict:
    """{(task, metric): value} from lm-evaluation-harness alone, loading the step folder itself, as
    `lm_eval run --model hf --model_args pretrained=FOLDER --include_path delphi/evaluate/tasks` does."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={folder}",
        tasks=tasks,
        task_manager=TaskManager(include_path=str(BUILTIN_TASKS), include_defaults=False),
        limit=limit,
        batch_size=batch_size,
        device="cpu",
        log_samples=False,
    )
    return {
        (task, key.split(",")[0]): value
        for task, metrics in results["results"].items()
        for key, value in metrics.items()
        if key.split(",")[0] in results["higher_is_better"][task]
    }


def cells(out: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((out / EVAL_CELLS_DIR).rglob("*.json"))}


@pytest.mark.slow
def test_a_suite_evaluated_equals_the_harness_and_draws_seed_bands(seeds_dir, tmp_path):
    out = tmp_path / "eval"
    done = run_sweep([str(seeds_dir)], Options(tasks=TASKS, limit=8, batch_size=4), out, steps=[1, "final"])
    assert (done["computed"], done["reused"]) == (2 * 2 * 2, 0)
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert list(table[0]) == COLUMNS
    # runs x checkpoints x (bits_per_byte, word and byte perplexity; acc of the group and of its 4 phenomena)
    assert len(table) == 2 * 2 * (3 + 1 + len(PHENOMENA))
    run = seeds_dir / "tiny-seed1"
    for step in (1, 8):
        want = harness_numbers(run / f"step{step}", TASKS, limit=8, batch_size=4)
        got = {
            (r["task"], r["metric"]): r["value"]
            for r in table
            if r["source"] == str(run) and r["step"] == step
        }
        # the same model weights through the same harness code on the same tokens: the same floats
        assert got == want
    group = next(r for r in table if r["task"] == "delphi_minimal_pairs")
    row = next(r for r in table if r["task"] == "delphi_minimal_pairs_article")
    assert (group["metric"], group["samples"]) == ("acc", 8 * len(PHENOMENA))  # --limit is per task
    assert (row["run"], row["recipe"], row["seed_init"], row["samples"], row["limit"]) == (
        "tiny-seed0", "tiny", 7, 8, 8
    )  # fmt: skip
    assert row["tokens_seen"] == read_checkpoint_meta(seeds_dir / "tiny-seed0" / "step1")["tokens_seen"]
    assert (row["lm_eval_version"], row["dtype"], row["device"], row["batch_size"]) == (
        "0.4.13",
        "float32",
        "cpu",
        4,
    )
    assert len(row["config_hash"]) == 16 and row["task_version"] == "1.0"

    # the plot: one line for the recipe, its 2 seeds as mean and min-max band
    from delphi.evaluate.curves import curves_figure

    metric, curves = task_curves(done["table"], done["plans"], "delphi_bpb")
    assert metric == "bits_per_byte" and len(curves) == 2
    (ax,) = curves_figure(curves).axes
    assert [line.get_label() for line in ax.get_lines()] == ["tiny (2 seeds)"]
    values = [
        [r["value"] for r in table if r["run"] == f"tiny-seed{k}" and r["metric"] == metric] for k in (0, 1)
    ]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx(
        [(a + b) / 2 for a, b in zip(*values, strict=True)]
    )
    (band,) = ax.collections
    assert band.get_paths()[0].vertices[:, 1].min() == pytest.approx(min(map(min, values)))
    assert (out / "delphi_bpb.png").stat().st_size > 1000 and (out / "results.csv").is_file()


@pytest.mark.slow
def test_a_killed_sweep_resumes_computing_only_what_is_missing(seeds_dir, tmp_path):
    out = tmp_path / "eval"
    command = [sys.executable, "-m", "delphi", "eval", str(seeds_dir), "--tasks", ",".join(TASKS), "--limit", "40",
               "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(command, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(cells(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = cells(out)
    assert 3 <= len(before) < 2 * 4 * 2, "the sweep must be killed part-way"
    assert not list(out.glob("results.*"))
    done = run_process(command)
    assert done.returncode == 0, done.stderr[-3000:]
    after = cells(out)
    assert len(after) == 2 * 4 * 2
    assert all(after[path] == content for path, content in before.items())  # finished cells kept, not redone
    assert done.stdout.splitlines()[-1].startswith(
        f"{len(after) - len(before)} cell(s) computed, {len(before)} already done"
    )
    assert pq.read_table(out / "results.parquet").num_rows == 2 * 4 * (3 + 1 + len(PHENOMENA))


@pytest.mark.slow
def test_changed_settings_or_task_config_recompute_a_cell(seeds_dir, tmp_path):
    run = [str(seeds_dir / "tiny-seed0")]
    out = tmp_path / "eval"
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    rows = tasks_dir / "pairs.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"good": g, "bad": b}) + "\n"
            for g, b in [("Tom had a ball.", "Tom had an ball."), ("Mia was happy.", "Mia were happy.")]
        )
    )
    spec = {"task": "my_pairs", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(rows)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "", "doc_to_target": 0,
            "doc_to_choice": "{{[good, bad]}}", "metric_list": [{"metric": "acc"}]}  # fmt: skip
    import yaml

    (tasks_dir / "my_pairs.yaml").write_text(yaml.safe_dump(spec))
    options = Options(tasks=["my_pairs", "delphi_minimal_pairs"], limit=4, include_path=[str(tasks_dir)])

    def sweep(**changes):
        return run_sweep(run, Options(**{**options.__dict__, **changes}), out, steps=["final"])

    assert (sweep()["computed"], sweep()["computed"]) == (2, 0)
    first = cells(out)
    done = sweep(limit=5)
    assert (done["computed"], done["reused"]) == (2, 0)
    assert {r["task"]: r["samples"] for r in done["table"]} == {
        "my_pairs": 2, "delphi_minimal_pairs": 5 * len(PHENOMENA), **{f"delphi_minimal_pairs_{p}": 5 for p in PHENOMENA}
    }  # fmt: skip
    assert {r["limit"] for r in done["table"]} == {5}
    assert sweep(limit=5)["computed"] == 0
    spec["metric_list"].append({"metric": "acc_norm"})  # the task's config changes: only its cell is redone
    (tasks_dir / "my_pairs.yaml").write_text(yaml.safe_dump(spec))
    done = sweep(limit=5)
    assert (done["computed"], done["reused"]) == (1, 1)
    assert {r["metric"] for r in done["table"] if r["task"] == "my_pairs"} == {"acc", "acc_norm"}
    assert cells(out) != first and len(cells(out)) == 2  # replaced in place, never two numbers for one cell


@pytest.mark.slow
def test_a_checkpoint_saved_again_under_its_name_is_evaluated_again(seeds_dir, tmp_path):
    """A run retrained into its out_dir (--overwrite) or a branch pushed again: its cells are redone."""
    run = tmp_path / "run"
    shutil.copytree(seeds_dir / "tiny-seed0", run)
    options = Options(tasks=["delphi_minimal_pairs"], limit=2)
    assert run_sweep([str(run)], options, tmp_path / "eval", steps=[1, 2])["computed"] == 2
    meta = run / "step2" / "checkpoint.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "saved_at": "2030-01-01T00:00:00+00:00"}))
    again = run_sweep([str(run)], options, tmp_path / "eval", steps=[1, 2])
    assert (again["computed"], again["reused"]) == (1, 1)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--tasks", "delphi_bbp"], "unknown task 'delphi_bbp': did you mean delphi_bpb?"),
        (["--tasks", "delphi_bpb", "--steps", "1,3"], "no run has checkpoint step3"),
        (["--tasks", "delphi_bpb", "--steps", "1,last"], "'last' is not a step number"),
        (["--tasks", "delphi_bpb", "--limit", "0"], "--limit must be a positive number of documents, got 0"),
        (["--tasks", "delphi_bpb", "--every", "0"], "--every must be a positive number of steps, got 0"),
        (["--tasks", "delphi_bpb", "--metadata", "{x"], "--metadata '{x' is not JSON"),
        (["--tasks", "delphi_bpb", "--device", "cuda:7"], "--device 'cuda:7'"),
    ],
)
def test_bad_inputs_are_one_line_before_any_model_is_loaded(seeds_dir, tmp_path, capsys, args, expected):
    line = cli_error(capsys, ["eval", str(seeds_dir), *args, "--out", str(tmp_path / "o")])
    assert expected in line
    assert not (tmp_path / "o" / EVAL_CELLS_DIR).exists()


def test_inputs_that_are_not_runs_are_refused(seeds_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = cli_error(
        capsys, ["eval", str(tmp_path / "empty"), "--tasks", "delphi_bpb", "--out", str(tmp_path / "o")]
    )
    assert "has no step checkpoints" in line
    step = seeds_dir / "tiny-seed0" / "step1"
    line = cli_error(capsys, ["eval", str(step), "--tasks", "delphi_bpb", "--out", str(tmp_path / "o")])
    assert "is one checkpoint (a step folder)" in line


def test_without_the_harness_the_command_names_the_extra(seeds_dir, tmp_path):
    code = (
        "import sys; sys.modules['lm_eval'] = None\n"  # `import lm_eval` now fails as if it were not installed
        "from delphi.cli import main\n"
        f"main(['eval', {str(seeds_dir)!r}, '--tasks', 'delphi_bpb', '--out', {str(tmp_path / 'o')!r}])"
    )
    done = run_process([sys.executable, "-c", code])
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert 'pip install -e ".[eval]"' in line and "Traceback" not in done.stderr


@pytest.mark.slow
def test_hub_branches_are_evaluated_as_the_local_run(seeds_dir, hub_server, tmp_path):
    from delphi.hub.push import push_run

    push_run(seeds_dir / "tiny-seed0", "org/tiny", retry_wait=0.05)
    options = Options(tasks=["delphi_minimal_pairs"], limit=6)
    hub = run_sweep(["org/tiny"], options, tmp_path / "hub", steps=[1, 4])["table"]
    local = run_sweep([str(seeds_dir / "tiny-seed0")], options, tmp_path / "local", steps=[1, 4])["table"]
    assert [(r["step"], r["tokens_seen"], r["value"]) for r in hub] == [
        (r["step"], r["tokens_seen"], r["value"]) for r in local
    ]
    assert hub[0]["source"] == "org/tiny" and hub[0]["run"] == "tiny-seed0" and hub[0]["seed_init"] == 7


# ---------------------------------------------------------------- during training


def evaluation_recipe(tmp_path: Path, stories_data: Path, name: str, **overrides) -> Path:
    """A tiny run (checkpoints 1, 2, 4, 8) with both built-in tasks at every checkpoint."""
    settings = {
        "name": name,
        "model": WIDE_CONTEXT,
        "data": {"path": str(stories_data / "data"), "validation_size": 16},
        "checkpoints": {"steps": [1, 2, 4]},
        "evaluation": {"tasks": TASKS, "limit": 6, "batch_size": 4},
        "training.max_steps": 8,
    }
    return write_recipe(tmp_path / f"{name}.yaml", stories_data, tmp_path / name, **{**settings, **overrides})


IN_LOOP_KEYS = {
    "eval_delphi_bpb_bits_per_byte", "eval_delphi_bpb_word_perplexity", "eval_delphi_bpb_byte_perplexity",
    "eval_delphi_minimal_pairs_acc", *(f"eval_delphi_minimal_pairs_{p}_acc" for p in PHENOMENA),
}  # fmt: skip


def in_loop_numbers(run: Path) -> dict[int, dict]:
    return {
        step: {k: v for k, v in read_checkpoint_meta(folder)["eval"].items() if k.startswith("eval_delphi_")}
        for step, folder in list_checkpoints(run)
    }


def assert_equal_to_delphi_eval(run: Path, numbers: dict[int, dict], tmp_path: Path) -> None:
    """The in-loop numbers are the harness' on the saved checkpoint: the in-memory weights are the saved
    ones, the harness the same code; up to float32 reassociation of the sums (1e-6 relative)."""
    table = run_sweep(
        [str(run)], Options(tasks=TASKS, limit=6, batch_size=4), tmp_path / f"check-{run.name}"
    )["table"]
    for row in table:
        key = f"eval_{row['task']}_{row['metric']}"
        assert numbers[row["step"]][key] == pytest.approx(row["value"], rel=1e-6), (row["step"], key)


@pytest.mark.slow
def test_tasks_run_at_every_checkpoint_and_leave_training_unchanged(seeds_dir, stories_data, tmp_path):
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    # tiny-seed0 of the suite is this recipe without `evaluation:` (same seeds; the name is not the run)
    keep_all = {"steps": [1, 2, 4], "keep_optimizer": "all"}  # step 4 stays resumable (below)
    recipe = evaluation_recipe(
        tmp_path, stories_data, "with-eval", seeds={"init": 7, "data": 11}, checkpoints=keep_all
    )
    train(load_recipe([recipe]))
    run = tmp_path / "with-eval"
    numbers = in_loop_numbers(run)
    assert sorted(numbers) == [1, 2, 4, 8]
    assert all(set(n) == IN_LOOP_KEYS for n in numbers.values())
    for step, folder in list_checkpoints(run):
        baseline = read_checkpoint_meta(seeds_dir / "tiny-seed0" / folder.name)
        assert read_checkpoint_meta(folder)["eval_loss"] == baseline["eval_loss"], step  # training untouched
    history = json.loads((run / "step8" / "trainer_state.json").read_text())["log_history"]
    assert (
        sum("eval_delphi_minimal_pairs_acc" in entry for entry in history) == 4
    )  # Trainer.log: every tracker
    assert_equal_to_delphi_eval(run, numbers, tmp_path)

    # another `evaluation:` is the same run: back to step 4, it resumes and finishes with the new tasks
    shutil.rmtree(run / "step8")
    summary = train(load_recipe([recipe], ["evaluation.tasks=[delphi_minimal_pairs]", "evaluation.limit=3"]))
    assert not summary["complete_before"] and summary["checkpoints"][-1] == 8
    final = read_checkpoint_meta(run / "step8")
    assert final["eval_loss"] == read_checkpoint_meta(seeds_dir / "tiny-seed0" / "step8")["eval_loss"]
    assert {k for k in final["eval"] if k.startswith("eval_delphi_")} == {
        k for k in IN_LOOP_KEYS if "pairs" in k
    }


def test_the_evaluation_section_is_checked_and_not_part_of_the_run(stories_data, tmp_path):
    from delphi.errors import DelphiError
    from delphi.recipe import Recipe, load_recipe

    bad = evaluation_recipe(tmp_path, stories_data, "bad", evaluation={"task": ["delphi_bpb"], "limit": 0})
    with pytest.raises(DelphiError) as error:
        load_recipe([bad])
    assert "unknown key 'evaluation.task'" in str(error.value) and "did you mean 'tasks'" in str(error.value)
    plain = load_recipe([write_recipe(tmp_path / "plain.yaml", stories_data, tmp_path / "run")])
    section = {"tasks": TASKS, "limit": 6, "num_fewshot": 0, "batch_size": 4}
    evaluated = load_recipe(
        [write_recipe(tmp_path / "e.yaml", stories_data, tmp_path / "run", evaluation=section)]
    )
    assert evaluated.evaluation.tasks == TASKS
    assert Recipe.identity_of(evaluated.to_dict()) == Recipe.identity_of(plain.to_dict())
    # values the harness would read otherwise (limit 0 is "all documents" to lm_eval), refused on loading
    for key, bad_value in (("limit", 0), ("num_fewshot", -1), ("batch_size", 0)):
        bad = write_recipe(
            tmp_path / "v.yaml", stories_data, tmp_path / "run", evaluation={"tasks": TASKS, key: bad_value}
        )
        with pytest.raises(DelphiError, match=f"evaluation.{key} in .* is {bad_value}"):
            load_recipe([bad])
    # a task the harness does not know: refused before the run builds anything, with the nearest name
    from delphi.recipe import recipe_problems

    typo = load_recipe(
        [
            write_recipe(
                tmp_path / "t.yaml", stories_data, tmp_path / "run", evaluation={"tasks": ["delphi_bpbb"]}
            )
        ]
    )
    (problem,) = recipe_problems(typo, reach_hub=False)
    assert "unknown task 'delphi_bpbb'" in problem and "delphi_bpb" in problem.split("did you mean")[1]
    assert recipe_problems(evaluated, reach_hub=False) == []


def test_a_recipe_with_tasks_is_refused_without_the_harness(stories_data, tmp_path):
    """`delphi validate` (and so train and suite) names the extra before anything trains."""
    recipe = evaluation_recipe(tmp_path, stories_data, "e", evaluation={"tasks": ["delphi_bpb"]})
    code = (
        "import sys; sys.modules['lm_eval'] = None\n"
        "from delphi.cli import main\n"
        f"main(['validate', {str(recipe)!r}])"
    )
    done = run_process([sys.executable, "-c", code])
    assert done.returncode == 2, done.stderr
    problem = next(line for line in done.stdout.splitlines() if "evaluation.tasks" in line)
    assert 'pip install -e ".[eval]"' in problem and "Traceback" not in done.stderr
    plain = write_recipe(tmp_path / "plain.yaml", stories_data, tmp_path / "run")
    code = code.replace(repr(str(recipe)), repr(str(plain)))
    assert run_process([sys.executable, "-c", code]).returncode == 0  # no tasks: no harness needed


COUNT_EVALUATIONS = """
import os
from transformers import TrainerCallback
import delphi.evaluate.harness as harness

_evaluate = harness.evaluate


def counted(*args, **kwargs):
    with open(os.path.join(os.environ["COUNT_DIR"], f"rank{os.environ.get('RANK', '0')}.txt"), "a") as f:
        f.write(args[2] + "\\n")
    return _evaluate(*args, **kwargs)


harness.evaluate = counted  # every task evaluation, by process


class Count(TrainerCallback):
    pass
"""


@pytest.mark.slow
def test_two_processes_evaluate_once_and_do_not_hang(stories_data, tmp_path):
    (tmp_path / "countcb.py").write_text(COUNT_EVALUATIONS)
    recipe = evaluation_recipe(tmp_path, stories_data, "two", callbacks=["countcb:Count"])
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(REPO / "accelerate_configs" / "multi-cpu.yaml"), "--main_process_port", str(free_port()),
              "--num_processes", "2", "-m", "delphi.train", str(recipe)]  # fmt: skip
    done = run_process(launch, {"COUNT_DIR": str(tmp_path)}, pythonpath=[tmp_path], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch 8 = 2 process(es)" in done.stderr
    assert sorted(p.name for p in tmp_path.glob("rank*.txt")) == ["rank0.txt"]  # process 1 ran none
    assert (tmp_path / "rank0.txt").read_text().split() == TASKS * 4  # each task once per checkpoint
    numbers = in_loop_numbers(tmp_path / "two")
    assert sorted(numbers) == [1, 2, 4, 8]
    assert_equal_to_delphi_eval(tmp_path / "two", numbers, tmp_path)
