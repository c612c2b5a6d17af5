"""`delphi logprobs` on a tiny real run: exact values, branch discovery, resuming, bad inputs, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from numerics import check, summation_bound
from tiny import MODEL, cli_error, write_recipe

from delphi.errors import DelphiError
from delphi.evaluate.logprobs import MARKER, load_logprobs, logprobs_for_checkpoints, token_logprobs
from delphi.layout import read_checkpoint_meta

pytestmark = pytest.mark.slow  # trains real runs (see `make test-fast`)

REPO = Path(__file__).resolve().parents[1]


def train_tiny_run(root: Path, data: Path, name: str, **overrides) -> Path:
    """Train a tiny Llama for 8 steps (checkpoints 1, 2, 4, 8) on `data`; return its run directory."""
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    path = write_recipe(
        root / f"{name}.yaml",
        data,
        root / name,
        name=name,
        data={"path": str(data / "data"), "validation_size": 16},
        checkpoints={"steps": [1, 2, 4]},
        **{"training.max_steps": 8},
        **overrides,
    )
    train(load_recipe([path]))
    return root / name


@pytest.fixture(scope="module")
def tiny_run(stories_data, tmp_path_factory) -> tuple[Path, Path]:
    """(run directory with checkpoints step1, step2, step4, step8; tokenized dataset directory)."""
    return train_tiny_run(tmp_path_factory.mktemp("logprobs"), stories_data, "tiny"), stories_data / "data"


def direct_logprobs(checkpoint: Path, sequences: list[list[int]]) -> np.ndarray:
    """The reference: log_softmax of model(input_ids).logits, gathered at the next token, NaN first."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    ids = torch.tensor(sequences)
    with torch.no_grad():
        logits = model(ids).logits
    gathered = torch.log_softmax(logits.double(), dim=-1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    return np.concatenate([np.full((len(sequences), 1), np.nan), gathered.numpy()], axis=1)


def first_sequences(data: Path, n: int) -> list[list[int]]:
    return pq.read_table(data / "validation-00000.parquet").column("tokens").to_pylist()[:n]


def assert_logprobs_match(got, want):
    """Logprobs computed in batches against one sequence at a time: log-softmax over the vocabulary of the
    same weights along another kernel path, within a float32 summation bound of their size (numerics.py)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.ndim == 2:
        got, want = got[:, 1:], want[:, 1:]  # the first token has no logprob
    worst = np.abs(got - want).max() / np.abs(want).max()
    check(
        "logprobs vs direct computation: max|diff| / max|logprob|",
        worst,
        summation_bound(MODEL["vocab_size"]),
    )


@pytest.mark.numerics
def test_logprobs_equal_direct_computation_and_resume(tiny_run, tmp_path):
    run, data = tiny_run
    out = tmp_path / "lp"
    results = logprobs_for_checkpoints(
        run, "ALL", dataset=data, split="validation[:16]", out_dir=out, batch_size=5
    )
    assert list(results) == ["step1", "step2", "step4", "step8"]
    assert all(r["status"] == "computed" for r in results.values())
    assert sorted(p.name for p in out.iterdir()) == ["step1", "step2", "step4", "step8"]

    sequences = first_sequences(data, 16)
    for branch in ("step1", "step8"):
        saved = load_logprobs(out, branch, "validation")
        assert saved.column_names == ["logprobs"] and len(saved) == 16
        got = np.array(saved["logprobs"], dtype=np.float64)
        want = direct_logprobs(run / branch, sequences)
        assert np.isnan(got[:, 0]).all() and not np.isnan(got[:, 1:]).any()
        assert_logprobs_match(got, want)
        # the run evaluated the same 16 sequences: mean next-token loss = -mean logprob, the same float32
        # logsumexps over the vocabulary averaged over 16 x 31 tokens along another path
        meta = read_checkpoint_meta(run / branch)
        bound = summation_bound(16 * 31 + MODEL["vocab_size"])
        mean = results[branch]["mean_logprob"]
        check("mean logprob vs the run's eval loss, relative", abs(-mean / meta["eval_loss"] - 1), bound)
        check("mean logprob vs the mean of the saved ones, relative", abs(mean / np.nanmean(got) - 1), bound)

    files = {b: out / b / "validation-00000.parquet" for b in results}
    stamps = {b: f.stat().st_mtime_ns for b, f in files.items()}
    again = logprobs_for_checkpoints(run, "ALL", dataset=data, split="validation[:16]", out_dir=out)
    assert {r["status"] for r in again.values()} == {"skipped"}
    assert {b: f.stat().st_mtime_ns for b, f in files.items()} == stamps

    # a run interrupted before step4's marker was written: only step4 is redone
    (out / "step4" / MARKER).unlink()
    (out / "step4" / ".validation-00000.parquet.tmp").write_bytes(b"half-written")
    third = logprobs_for_checkpoints(run, "ALL", dataset=data, split="validation[:16]", out_dir=out)
    assert {b: r["status"] for b, r in third.items()} == {
        "step1": "skipped",
        "step2": "skipped",
        "step4": "computed",
        "step8": "skipped",
    }
    assert len(load_logprobs(out, "step4", "validation")) == 16

    # another split of the same checkpoints lives beside the first
    logprobs_for_checkpoints(run, "step8", dataset=data, split="train[:3]", out_dir=out)
    marker = json.loads((out / "step8" / MARKER).read_text())
    assert sorted(marker["splits"]) == ["train", "validation"]
    assert len(load_logprobs(out, "step8", "train")) == 3


@pytest.mark.numerics
def test_variable_length_sequences_and_token_logprobs(tiny_run, tmp_path):
    """Sequences of different lengths are padded within a batch; padding never changes a value."""
    run, data = tiny_run
    full = first_sequences(data, 3)
    ragged = [full[0], full[1][:9], full[2][:20]]
    folder = tmp_path / "ragged"
    folder.mkdir()
    pq.write_table(pa.table({"ids": pa.array(ragged, pa.list_(pa.int32()))}), folder / "test-00000.parquet")
    logprobs_for_checkpoints(
        run, "step8", dataset=folder, split="test", feature="ids", out_dir=tmp_path / "o"
    )
    got = load_logprobs(tmp_path / "o", "step8", "test")["logprobs"]
    assert [len(row) for row in got] == [32, 9, 20]
    for row, seq in zip(got, ragged, strict=True):
        want = direct_logprobs(run / "step8", [seq])[0]
        assert_logprobs_match(np.array(row[1:]), want[1:])

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "step8").eval()
    with torch.no_grad():
        batch = token_logprobs(model, torch.tensor(full))
    assert batch.shape == (3, 32) and batch.dtype == torch.float32 and batch[:, 0].isnan().all()


def test_bad_inputs_fail_before_any_work(tiny_run, tmp_path):
    run, data = tiny_run
    out = tmp_path / "lp"

    def fails(match, model=run, branches="ALL", **kw):
        kw = {"dataset": data, "split": "validation[:4]", "out_dir": out} | kw
        with pytest.raises(DelphiError, match=match):
            logprobs_for_checkpoints(model, branches, **kw)

    fails(r"no checkpoint step3; available: step1, step2, step4, step8", branches="step1,step3")
    fails(r"no such directory: .*missing", model=str(tmp_path / "missing"))
    fails(r"feature 'ids' not found .*\['tokens'\]", feature="ids")
    fails(r"nowhere to write", out_dir=None)
    fails(r"batch size must be >= 1, got 0", batch_size=0)
    fails(r"split 'test' not found", split="test")
    big = tmp_path / "big"
    big.mkdir()
    pq.write_table(
        pa.table({"tokens": pa.array([[0, 5, 999]], pa.list_(pa.int32()))}), big / "v-00000.parquet"
    )
    fails(r"token id 999 .* vocab_size 384", dataset=big, split="v")
    assert not out.exists() or not any(out.rglob("*.parquet")), "nothing may be written"

    logprobs_for_checkpoints(run, "step1", dataset=data, split="validation[:4]", out_dir=out)
    before = (out / "step1" / "validation-00000.parquet").read_bytes()
    fails(
        r"already holds logprobs of split 'validation' .*validation\[:5\]",
        branches="step1",
        split="validation[:5]",
    )
    assert (out / "step1" / "validation-00000.parquet").read_bytes() == before


def test_a_step_folder_is_that_checkpoint_of_its_run(tiny_run, tmp_path):
    """`delphi logprobs RUN/step8` reads a checkpoint reference as `delphi generate` does."""
    run, data = tiny_run
    by_folder = logprobs_for_checkpoints(
        run / "step8", dataset=data, split="validation[:4]", out_dir=tmp_path / "a"
    )
    by_branch = logprobs_for_checkpoints(
        run, "step8", dataset=data, split="validation[:4]", out_dir=tmp_path / "b"
    )
    assert list(by_folder) == list(by_branch) == ["step8"]
    a, b = (pq.read_table(tmp_path / x / "step8" / "validation-00000.parquet") for x in ("a", "b"))
    rows_a, rows_b = (np.array(t.column("logprobs").to_pylist(), dtype=np.float32) for t in (a, b))
    np.testing.assert_array_equal(rows_a, rows_b)  # NaN at position 0 compares equal here


def test_cli_logprobs(tiny_run, tmp_path):
    run, data = tiny_run
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "delphi", "logprobs", str(run), "--branches", "step1,step8",
            "--dataset", str(data), "--split", "validation[:6]", "--out-dir", f"{tmp_path}/o"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step1: computed, mean logprob -" in proc.stdout and "step8: computed" in proc.stdout
    import datasets

    loaded = datasets.load_dataset(str(tmp_path / "o" / "step8"), split="validation")
    assert len(loaded) == 6 and len(loaded[0]["logprobs"]) == 32
    proc = subprocess.run(args[:6] + ["ALL"] + args[7:], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step1: skipped" in proc.stdout and "step2: computed" in proc.stdout


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # httpx, inside huggingface_hub
@pytest.mark.numerics
def test_logprobs_from_a_hub_repo_pushed_to_a_hub_dataset(hub_server, tiny_run, tmp_path):
    """A run published to the (local) hub: every step branch scored, one dataset branch per checkpoint."""
    from delphi.evaluate.sources import list_branches
    from delphi.generate import generate
    from delphi.hub.push import push_run

    run, data = tiny_run
    push_run(run, "org/tiny", retry_wait=0.05)
    assert list_branches("org/tiny") == ["step1", "step2", "step4", "step8"]
    out = tmp_path / "lp"
    kw = {"dataset": data, "split": "validation[:16]", "batch_size": 7}
    results = logprobs_for_checkpoints("org/tiny", "ALL", out_dir=out, out_repo="org/tiny-logprobs", **kw)
    assert {b: r["status"] for b, r in results.items()} == dict.fromkeys(
        ["step1", "step2", "step4", "step8"], "computed"
    )
    assert hub_server.branches("org/tiny-logprobs", "dataset") >= {"step1", "step2", "step4", "step8"}
    assert set(hub_server.files("org/tiny-logprobs", "step8", "dataset")) >= {
        "data/validation-00000.parquet",
        MARKER,
    }
    sequences = first_sequences(data, 16)
    for branch in ("step2", "step8"):
        remote = np.array(load_logprobs("org/tiny-logprobs", branch, "validation")["logprobs"])
        local = np.array(load_logprobs(out, branch, "validation")["logprobs"])
        np.testing.assert_array_equal(remote, local)
        want = direct_logprobs(run / branch, sequences)
        assert_logprobs_match(remote, want)

    commits = hub_server.hub.count("commit")
    again = logprobs_for_checkpoints("org/tiny", "ALL", out_repo="org/tiny-logprobs", **kw)
    assert {r["status"] for r in again.values()} == {"skipped"}
    assert hub_server.hub.count("commit") == commits
    logprobs_for_checkpoints(
        "org/tiny", "step8", out_repo="org/tiny-logprobs", **(kw | {"split": "train[:3]"})
    )
    marker = json.loads(hub_server.files("org/tiny-logprobs", "step8", "dataset")[MARKER])
    assert sorted(marker["splits"]) == ["train", "validation"]
    assert marker["splits"]["validation"]["model"] == "org/tiny"
    assert marker["splits"]["validation"]["dataset"] == "data", "no local directories on the hub"
    assert len(load_logprobs("org/tiny-logprobs", "step8", "train")) == 3

    # a checkpoint of the final model on main can be named too, and generation reads hub branches
    main = logprobs_for_checkpoints("org/tiny", "main", out_dir=out, **kw)["main"]
    assert main["mean_logprob"] == pytest.approx(results["step8"]["mean_logprob"], abs=1e-6)
    sample = dict(prompt="Once upon a time", n=2, max_new_tokens=8, seed=5)
    assert generate("org/tiny", revision="step4", **sample) == generate(run / "step4", **sample)


def test_a_device_that_is_not_here_fails_before_anything_is_loaded(tiny_run, tmp_path, capsys):
    from delphi.devices import available_devices

    run, data = tiny_run
    here = ", ".join(available_devices())
    argv = ["logprobs", str(run), "--branches", "step1", "-i", str(data), "--split", "validation[:10]"]
    argv += ["--out-dir", str(tmp_path / "x")]
    bad = {"cdua": "is not a torch device", "cuda:99": "", "meta": "delphi cannot run on 'meta' devices"}
    if not torch.cuda.is_available():
        bad["cuda"] = "is not available (torch"
    for device, reason in bad.items():
        error = cli_error(capsys, [*argv, "--device", device])
        assert (
            f"--device {device!r}" in error and reason in error and error.endswith(f"available here: {here}")
        )
    assert not (tmp_path / "x").exists()


def test_a_step_folder_with_other_branches_is_refused(tiny_run, tmp_path, capsys):
    """`RUN/step8 --branches step1` would score the run's step1: refused, as `generate --revision` is."""
    run, data = tiny_run
    step8 = str(run / "step8")
    argv = ["-i", str(data), "--split", "validation[:4]", "--out-dir", str(tmp_path / "x")]
    for branches in ("step1", "step8,step1", "ALL,step1"):
        error = cli_error(capsys, ["logprobs", step8, "--branches", branches, *argv])
        assert f"{step8!r} is checkpoint step8 of run {str(run)!r}, but --branches {branches!r}" in error
        assert f"pass the run directory {str(run)!r} with --branches, or the step folder alone" in error
    assert not (tmp_path / "x").exists()
    same = logprobs_for_checkpoints(
        step8, "step8", dataset=data, split="validation[:4]", out_dir=tmp_path / "x"
    )
    assert list(same) == ["step8"]


def test_ctrl_c_leaves_no_branch_folder_and_the_rerun_resumes(tiny_run, tmp_path):
    """SIGINT while step2 is being scored: step1 stays done, nothing of step2 is left, the rerun redoes it."""
    import signal
    import time

    run, data = tiny_run
    rows = first_sequences(data, 16)
    big = tmp_path / "big"
    big.mkdir()  # enough sequences that scoring one checkpoint one at a time takes a few seconds
    pq.write_table(pa.table({"tokens": pa.array(rows * 150, pa.list_(pa.int32()))}), big / "v-00000.parquet")
    out = tmp_path / "lp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "delphi", "logprobs", str(run), "--branches", "step1,step2",
            "-i", str(big), "--split", "v", "-b", "1", "--out-dir", str(out)]  # fmt: skip
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=REPO)
        deadline = time.monotonic() + 120
        # step1 is done and something of step2 has appeared: step2 is being scored
        while not ((out / "step1" / MARKER).is_file() and any(p.name != "step1" for p in out.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    assert "delphi logprobs: interrupted" in (tmp_path / "stderr").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["step1"], "an interrupted checkpoint leaves nothing"

    again = logprobs_for_checkpoints(run, "step1,step2", dataset=big, split="v", out_dir=out, batch_size=64)
    assert {b: r["status"] for b, r in again.items()} == {"step1": "skipped", "step2": "computed"}
    assert sorted(p.name for p in out.iterdir()) == ["step1", "step2"]
    assert len(load_logprobs(out, "step2", "v")) == 16 * 150
