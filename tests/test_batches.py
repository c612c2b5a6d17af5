"""`delphi batches`: the data order recomputed without training, checked against the sampler, the real
tokenized data, the CLI, the hub, and (slow) the input_ids that real 1- and 2-process training runs fed
their model at every optimizer step, across epoch boundaries and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from tiny import ENV, REPO
from transformers import TrainerCallback

from delphi.errors import DelphiError
from delphi.evaluate.batches import (
    load_plan,
    load_source_recipe,
    parse_steps,
    read_tokens,
    rows_for_steps,
)
from delphi.recipe.usercode import import_function
from delphi.train.order import sequence_steps, step_indices
from delphi.train.sampler import DeterministicEpochSampler


@pytest.mark.parametrize("order", ["hash", "delphi-v0.2"])
@pytest.mark.parametrize("n,batch", [(43, 8), (40, 8), (7, 7)])
def test_step_indices_are_the_samplers_batches(order, n, batch):
    """Step g (1-based) = batch (g-1) % (n//B) of epoch (g-1) // (n//B) of what the Trainer's sampler yields."""
    sampler = DeterministicEpochSampler(n, 11, global_batch_size=batch, order=order)
    expected = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        expected += np.array(list(sampler)).reshape(-1, batch).tolist()
    steps = np.arange(1, len(expected) + 1)
    assert step_indices(n, 11, batch, order, steps).tolist() == expected
    # any subset, in any order, gives the same rows
    picked = np.array([len(expected), 1, n // batch + 1, 3])
    assert step_indices(n, 11, batch, order, picked).tolist() == [expected[s - 1] for s in picked]


@pytest.mark.parametrize("order", ["hash", "delphi-v0.2"])
def test_sequence_steps_inverts_step_indices(order):
    n, batch, total = 43, 8, 13  # 5 steps an epoch, 3 sequences dropped each epoch; 2.6 epochs
    table = step_indices(n, 5, batch, order, np.arange(1, total + 1))
    every = {(s + 1, p, int(i)) for s, row in enumerate(table) for p, i in enumerate(row)}
    step, position, index = sequence_steps(n, 5, batch, order, total, np.arange(n))
    found = list(zip(step.tolist(), position.tolist(), index.tolist(), strict=True))
    assert set(found) == every and len(found) == len(every)
    assert found == sorted(found)  # by step, then position
    for i in range(n):
        epochs = [(s - 1) // 5 for s, _, j in found if j == i]
        assert len(epochs) == len(set(epochs)) <= 3  # at most once an epoch
    one = sequence_steps(n, 5, batch, order, total, [17])
    assert [(s, p) for s, p, i in found if i == 17] == list(
        zip(one[0].tolist(), one[1].tolist(), strict=True)
    )


def test_bad_steps_and_indices():
    assert parse_steps("1-3,7, 5 ,2", 10).tolist() == [1, 2, 3, 5, 7]
    assert parse_steps("all", 4).tolist() == [1, 2, 3, 4]
    for spec, match in [
        ("0-3", "not a range of steps >= 1"),
        ("5-2", "not a range"),
        ("1-11", "past the run's last step 10"),
        ("1..3", "is not a step or range"),
        ("", "is not a step or range"),
    ]:
        with pytest.raises(DelphiError, match=match):
            parse_steps(spec, 10)
    with pytest.raises(DelphiError, match="past the run's last step 13"):
        step_indices(43, 0, 8, "hash", [14], total_steps=13)
    with pytest.raises(DelphiError, match="counted from 1"):
        step_indices(43, 0, 8, "hash", [0])
    with pytest.raises(DelphiError, match=r"outside the train split \(0 .. 42\)"):
        sequence_steps(43, 0, 8, "hash", 13, [43])
    with pytest.raises(DelphiError, match="fewer than one global batch"):
        step_indices(7, 0, 8, "hash", [1])
    with pytest.raises(DelphiError, match="unknown data order"):
        step_indices(43, 0, 8, "shuffled", [1])


# ---- from a recipe and real tokenized data ----


def write_run_recipe(folder: Path, stories_data: Path, **overrides) -> Path:
    """A tiny-Llama recipe on 43 train sequences, batch 8 (5 steps an epoch), 2.6 epochs = 13 steps."""
    from tiny import write_recipe

    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "name": "order",
        "data": {"path": str(stories_data / "data"), "train_split": "train[:43]", "validation_size": 8},
        "micro_batch_size": 2,
        "checkpoints": {"steps": [5, 7]},
        "training": {
            "num_train_epochs": 2.6,
            "learning_rate": 5e-3,
            "logging_steps": 1,
            "disable_tqdm": True,
        },
    }
    return write_recipe(folder / "order.yaml", stories_data, folder / "run", **(settings | overrides))


@pytest.mark.slow
def test_plan_tokens_and_text_from_a_recipe(stories_data, tmp_path):
    from delphi.data.tokenizer import load_tokenizer
    from delphi.train.data import load_token_split

    recipe, recipe_dir = load_source_recipe(write_run_recipe(tmp_path, stories_data))
    assert recipe_dir == tmp_path.resolve()
    plan, dataset = load_plan(recipe, recipe_dir)
    assert (plan.n, plan.batch, plan.seed, plan.order, plan.steps_per_epoch, plan.total_steps) == (
        43, 8, 11, "hash", 5, 13,
    )  # fmt: skip
    tokens = np.array(load_token_split(stories_data / "data", "train[:43]")["tokens"])
    step, position, index = rows_for_steps(plan, [13, 6])
    assert step.tolist() == [13] * 8 + [6] * 8 and position.tolist() == list(range(8)) * 2
    assert np.array_equal(read_tokens(dataset, index), tokens[index])
    # --set works as in `delphi train`; max_steps wins over epochs
    recipe, _ = load_source_recipe(tmp_path / "order.yaml", ["training.max_steps=30", "seeds.data=3"])
    plan3, _ = load_plan(recipe)
    assert (plan3.total_steps, plan3.seed) == (30, 3)
    assert not np.array_equal(plan3.indices([1]), plan.indices([1]))
    assert load_tokenizer(stories_data / "tok").decode(tokens[index[0]].tolist()).startswith("<bos>")


def run_batches(*args, cwd=REPO) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "delphi", "batches", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_cli_parquet_table_sequence_and_stat(stories_data, tmp_path):
    from delphi.data.tokenizer import load_tokenizer
    from delphi.train.data import load_token_split

    recipe = write_run_recipe(tmp_path, stories_data)
    tokens = np.array(load_token_split(stories_data / "data", "train[:43]")["tokens"])
    expected = step_indices(43, 11, 8, "hash", np.arange(1, 14))

    out = tmp_path / "b.parquet"
    done = run_batches(recipe, "--steps", "4-7", "--decode", "--out", out)
    assert "order: 43 train sequences, global batch 8, 13 steps (5 per epoch" in done.stderr
    table = pq.read_table(out)
    assert table.column_names == ["step", "position", "index", "tokens", "text"]
    rows = table.to_pydict()
    assert rows["step"] == [s for s in range(4, 8) for _ in range(8)]
    assert rows["position"] == list(range(8)) * 4
    assert rows["index"] == expected[3:7].reshape(-1).tolist()
    assert np.array_equal(np.array(rows["tokens"]), tokens[rows["index"]])
    tokenizer = load_tokenizer(stories_data / "tok")
    assert rows["text"] == tokenizer.batch_decode(tokens[rows["index"]].tolist())

    printed = run_batches(recipe, "--steps", "13").stdout.splitlines()
    assert printed[0].split("\t")[:3] == ["step", "position", "index"]
    assert [line.split("\t")[2] for line in printed[1:]] == [str(i) for i in expected[12]]
    first = tokens[expected[12][0]]
    assert printed[1].split("\t")[3] == " ".join(map(str, first[:12])) + " ... (32)"

    # a reader that stops early (`| head`): the exit status of `yes | head`, and no traceback
    gone = subprocess.Popen(
        [sys.executable, "-m", "delphi", "batches", str(recipe), "--steps", "1-13"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    gone.stdout.close()
    assert gone.wait(timeout=120) == 141
    assert "Traceback" not in gone.stderr.read().decode()

    wanted = int(expected[0][3])
    listed = run_batches(recipe, "--sequence", wanted).stdout.splitlines()[1:]
    where = [(s + 1, p) for s in range(13) for p in range(8) if expected[s][p] == wanted]
    assert [tuple(map(int, line.split("\t")[:2])) for line in listed] == where
    assert len(where) >= 1

    # --stat: a module next to the recipe, found from the recipe's directory (the cwd is elsewhere)
    (tmp_path / "mystats.py").write_text(
        "import numpy as np\n"
        "def first_tokens(step, tokens):\n"
        "    return {'shape': list(tokens.shape), 'firsts': tokens[:, 1], 'sum': np.int64(tokens.sum())}\n"
    )
    stats = tmp_path / "stats.jsonl"
    run_batches(
        recipe, "--steps", "1-13", "--stat", "mystats:first_tokens", "--out", stats, cwd=tmp_path.parent
    )
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 14))
    for line, indices in zip(lines, expected, strict=True):
        batch = tokens[indices]
        assert line["first_tokens"] == {
            "shape": [8, 32],
            "firsts": batch[:, 1].tolist(),
            "sum": int(batch.sum()),
        }


@pytest.mark.slow
def test_bad_cli_inputs_fail_before_any_work(stories_data, tmp_path, capsys):
    from delphi.cli import main

    recipe = write_run_recipe(tmp_path, stories_data)
    cases = [
        (["--out", str(tmp_path / "x.csv")], "must end in .parquet"),
        (["--stat", "m:f", "--out", str(tmp_path / "x.parquet")], "must end in .jsonl"),
        (["--stat", "nosuchmodule_xyz:f"], "cannot be imported"),
        (["--stat", "nocolon"], "must look like 'module:function'"),
        (["--steps", "1-99"], "past the run's last step 13"),
        (["--sequence", "43"], "outside the train split"),
        (["--set", "data.order=random"], "data.order"),
    ]
    for extra, match in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["batches", str(recipe), *extra])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert "delphi batches: error: " in error and match in error, (extra, error)
    for bad_source, match in [
        (tmp_path / "missing.yaml", "no such file or directory: .*missing.yaml"),
        (tmp_path, "without"),
    ]:
        with pytest.raises(DelphiError, match=match):
            load_source_recipe(bad_source)
    with pytest.raises(DelphiError, match="cannot be imported"):
        import_function("os:no_such_function")
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob("*.jsonl"))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # httpx, inside huggingface_hub
def test_recipe_from_a_hub_repo_branch(hub_server, stories_data, tmp_path):
    from huggingface_hub import HfApi

    from delphi.recipe import load_recipe

    recipe = load_recipe([write_run_recipe(tmp_path, stories_data)])
    api = HfApi()
    api.create_repo("org/order")
    for step, seed in (("step5", 99), ("step13", 11)):  # the newest step branch is the one read
        api.create_branch("org/order", branch=step)
        text = recipe.dump_yaml().replace("data: 11", f"data: {seed}")
        api.upload_file(
            path_or_fileobj=text.encode(), path_in_repo="recipe.yaml", repo_id="org/order", revision=step
        )
    remote, remote_dir = load_source_recipe("org/order")
    assert remote_dir is None and remote == recipe
    plan, _ = load_plan(remote)
    assert plan.indices([1, 13]).tolist() == step_indices(43, 11, 8, "hash", [1, 13]).tolist()
    with pytest.raises(DelphiError, match="org/none"):
        load_source_recipe("org/none")


# ---- against real training (1 process and 2 processes through torchrun, with resumes) ----


class RecordInputs(TrainerCallback):
    """Appends, per optimizer step, the input_ids of every training forward pass (each gradient-accumulation
    micro-batch) of this process to a JSON-lines file: {"step": g, "rank": r, "micro_batches": [...]}.

    A forward pre-hook on the model (registered at train begin) sees what the model really receives;
    evaluation passes run in eval mode and are left out.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.pending: list = []
        self.handle = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        if module.training:
            ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            self.pending.append(ids.detach().cpu().tolist())

    def on_step_end(self, args, state, control, **kwargs):
        line = {"step": state.global_step, "rank": args.process_index, "micro_batches": self.pending}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.pending = []

    def on_train_end(self, args, state, control, **kwargs):
        self.handle.remove()


class StopAfter(TrainerCallback):
    """Stops the run after `step` (a checkpoint step), like a run killed right after that checkpoint."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def train_recording(recipe_path: Path, record: Path, stop_after: int = 0) -> None:
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    callbacks = [RecordInputs(record)] + ([StopAfter(stop_after)] if stop_after else [])
    train(load_recipe([recipe_path]), callbacks=callbacks)


def recorded_steps(records: list[Path], world_size: int) -> dict[int, list]:
    """{step: the global batch's rows}: rank r's j-th micro-batch of a step is global micro-batch j*W + r
    (accelerate gives process r the sampler's micro-batches r, r+W, ...)."""
    by_step: dict[int, dict[int, list]] = {}
    for record in records:
        for line in map(json.loads, record.read_text().splitlines()):
            assert line["rank"] not in by_step.setdefault(line["step"], {}), (
                f"step {line['step']} trained twice"
            )
            by_step[line["step"]][line["rank"]] = line["micro_batches"]
    out = {}
    for step, ranks in by_step.items():
        assert sorted(ranks) == list(range(world_size))
        micro = [ranks[r][j] for j in range(len(ranks[0])) for r in range(world_size)]
        out[step] = [row for batch in micro for row in batch]
    return out


def batches_parquet(source: Path, out: Path) -> dict[int, list]:
    run_batches(source, "--out", out)  # every step of the run
    rows = pq.read_table(out).to_pydict()
    by_step: dict[int, list] = {}
    for step, position, tokens in zip(rows["step"], rows["position"], rows["tokens"], strict=True):
        assert position == len(by_step.setdefault(step, []))
        by_step[step].append(tokens)
    return by_step


@pytest.mark.slow
@pytest.mark.parametrize("order", ["hash", "delphi-v0.2"])
def test_one_process_run_trained_on_what_delphi_batches_says(stories_data, tmp_path, order):
    """1 process, micro-batch 2 x 4 accumulation; killed after step 5 (the end of epoch 0) and resumed."""
    import dataclasses

    from delphi.recipe import DataSection

    data = {"path": str(stories_data / "data"), "train_split": "train[:43]", "validation_size": 8}
    if order != "hash":
        if "order" not in {f.name for f in dataclasses.fields(DataSection)}:
            pytest.skip("this checkout has no recipe key data.order yet")
        data["order"] = order
    recipe = write_run_recipe(tmp_path, stories_data, data=data)
    record = tmp_path / "record.jsonl"
    train_recording(recipe, record, stop_after=5)
    assert [json.loads(x)["step"] for x in record.read_text().splitlines()] == [1, 2, 3, 4, 5]
    train_recording(recipe, record)  # resume: auto, from step5
    trained = recorded_steps([record], 1)
    assert sorted(trained) == list(range(1, 14))  # 2.6 epochs of 5 steps: 13 steps, each once
    assert all(len(rows) == 8 for rows in trained.values())
    assert batches_parquet(tmp_path / "run", tmp_path / "b.parquet") == trained  # the run dir's recipe.yaml


@pytest.mark.slow
def test_two_process_run_trained_on_what_delphi_batches_says(stories_data, tmp_path):
    """2 gloo processes x micro-batch 2 x 2 accumulation; killed after step 7 (mid epoch 1) and resumed."""
    recipe = write_run_recipe(tmp_path, stories_data)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
    ]
    for stop_after in (7, 0):
        done = subprocess.run(
            [*command, str(recipe), str(tmp_path), str(stop_after)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    context = json.loads((tmp_path / "run" / "step13" / "run_context.json").read_text())
    assert context["world_size"] == 2
    trained = recorded_steps([tmp_path / "rank0.jsonl", tmp_path / "rank1.jsonl"], 2)
    assert sorted(trained) == list(range(1, 14))
    assert batches_parquet(recipe, tmp_path / "b.parquet") == trained  # the recipe file


@pytest.mark.slow
def test_recipe_as_saved_in_a_run_dir_gives_the_same_plan(stories_data, tmp_path):
    """A run directory's recipe.yaml (as `delphi train` writes it), or only a step folder's, is a source."""
    from delphi.recipe import load_recipe

    recipe = load_recipe([write_run_recipe(tmp_path, stories_data)])
    run = tmp_path / "run"
    (run / "step5").mkdir(parents=True)
    (run / "step5" / "checkpoint.json").write_text("{}")
    (run / "step5" / "recipe.yaml").write_text(recipe.dump_yaml())
    from_step, _ = load_source_recipe(run)
    (run / "recipe.yaml").write_text(yaml.safe_dump({**recipe.to_dict(), "callbacks": ["gone.module:Cb"]}))
    from_run, run_dir = load_source_recipe(run)
    assert from_step == recipe and from_run == recipe and run_dir == run.resolve()


if __name__ == "__main__":  # one torchrun process of test_two_process_run_trained_on_what_delphi_batches_says
    import torch

    torch.set_num_threads(1)
    recipe_path, folder, stop_after = sys.argv[1:]
    rank = int(os.environ["RANK"])
    train_recording(Path(recipe_path), Path(folder) / f"rank{rank}.jsonl", int(stop_after))
