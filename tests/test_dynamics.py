"""`delphi dynamics` on tiny real runs: a directory of 2 Llama seeds, a Mamba, a hub repo; the numbers
against an independent computation from the checkpoint files; resumption, determinism, bad inputs, CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from numerics import check, summation_bound
from tiny import MAMBA_MODEL, cli_error

from delphi.dynamics.table import CACHE, COLUMNS, run_dynamics
from delphi.errors import DelphiError

pytestmark = pytest.mark.slow  # trains real runs (see `make test-fast`)

REPO = Path(__file__).resolve().parents[1]
EPS64 = torch.finfo(torch.float64).eps


@pytest.fixture(scope="module")
def seeds_dir(stories_data, tmp_path_factory) -> Path:
    """A directory of two seeds of one tiny Llama recipe (checkpoints step1, 2, 4, 8)."""
    from test_logprobs import train_tiny_run

    root = tmp_path_factory.mktemp("dynamics")
    for k in range(2):
        train_tiny_run(root, stories_data, f"tiny-seed{k}", seeds={"init": 7 + k, "data": 11 + k})
    for recipe in root.glob("*.yaml"):
        recipe.unlink()
    return root


@pytest.fixture(scope="module")
def mamba_run(stories_data, tmp_path_factory) -> Path:
    from test_logprobs import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("dynamics-mamba"), stories_data, "mamba", model=MAMBA_MODEL)


def read(path: Path):
    return pq.read_table(path).to_pandas()


def value(frame, **where) -> float:
    rows = frame
    for column, wanted in where.items():
        rows = rows[rows[column].isna()] if wanted is None else rows[rows[column] == wanted]
    assert len(rows) == 1, (where, len(rows))
    return float(rows["value"].iloc[0])


def checkpoint_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


@pytest.mark.numerics
def test_two_seeds_table_against_the_checkpoint_files(seeds_dir, stories_data, tmp_path):
    out = tmp_path / "dyn"
    result = run_dynamics([seeds_dir], probe=stories_data / "data", sequences=8, out_dir=out)
    assert result.computed == 8 and result.skipped == 0
    assert result.probe["sequences"] == 8 and result.probe["length"] == 32
    frame = read(out / "dynamics.parquet")
    assert list(frame.columns) == COLUMNS
    csv = __import__("pandas").read_csv(out / "dynamics.csv")
    assert list(csv.columns) == COLUMNS and len(csv) == len(frame)
    np.testing.assert_array_equal(csv["value"].to_numpy(), frame["value"].to_numpy())  # every digit kept
    assert set(frame["run"]) == {"tiny-seed0", "tiny-seed1"} and set(frame["recipe"]) == {"tiny"}
    assert sorted(set(frame["step"])) == [1, 2, 4, 8]
    assert sorted(set(frame["tokens_seen"])) == [256, 512, 1024, 2048]
    assert set(frame["quantity"]) == {"weight", "grad", "activation"}
    seed1 = frame[frame["run"] == "tiny-seed1"]
    assert set(zip(seed1["seed_init"], seed1["seed_data"], strict=True)) == {(8, 12)}

    # weights: the metrics of the tensors in the checkpoint files, computed here along another path
    run = seeds_dir / "tiny-seed0"
    mine = frame[frame["run"] == "tiny-seed0"]
    w1, w2, w8 = (checkpoint_weights(run / f"step{s}") for s in (1, 2, 8))
    q8 = w8["model.layers.0.self_attn.q_proj.weight"].double()
    q = dict(layer=0, component="attn.q", quantity="weight")
    s = torch.linalg.svdvals(q8)
    assert value(mine, step=8, metric="frobenius", **q) == pytest.approx(q8.norm().item(), rel=256 * EPS64)
    assert value(mine, step=8, metric="spectral", **q) == pytest.approx(s[0].item(), rel=256 * EPS64)
    assert value(mine, step=8, metric="effective_rank", **q) == pytest.approx(
        (s.sum() ** 2 / (s**2).sum()).item(), rel=256 * EPS64
    )
    for name, component, layer in [
        ("model.embed_tokens.weight", "embedding", None),
        ("lm_head.weight", "lm_head", None),
    ]:
        moved = (w2[name].double() - w1[name].double()).norm() / w1[name].double().norm()
        got = value(mine, step=2, metric="rel_dist_prev", layer=layer, component=component, quantity="weight")
        assert got == pytest.approx(moved.item(), rel=1e4 * EPS64)
        first = value(
            mine, step=8, metric="rel_dist_first", layer=layer, component=component, quantity="weight"
        )
        want = (w8[name].double() - w1[name].double()).norm() / w1[name].double().norm()
        assert first == pytest.approx(want.item(), rel=1e4 * EPS64)
    assert value(mine, step=1, metric="rel_dist_first", **q) == 0.0
    assert mine[(mine["step"] == 1) & (mine["metric"] == "rel_dist_prev")].empty  # nothing before step1
    norm = dict(layer=0, component="norm.attn", quantity="weight")
    assert value(mine, step=8, metric="l2", **norm) > 0
    assert mine[
        (mine["component"] == "norm.attn") & (mine["metric"] == "spectral")
    ].empty  # 1-D: vector metrics

    # gradients: one backward over the whole probe at once (the table's comes in chunks of 16 sequences:
    # here 8, so one chunk too, but through transformers' loss at another batch shape: float32 sums of
    # 8 x 31 token losses in another order)
    from transformers import AutoModelForCausalLM

    ids = torch.tensor(
        pq.read_table(stories_data / "data" / "validation-00000.parquet").column("tokens").to_pylist()[:8]
    )
    model = AutoModelForCausalLM.from_pretrained(run / "step4").eval()
    model(input_ids=ids, labels=ids).loss.backward()
    grad = model.model.layers[0].mlp.down_proj.weight.grad.double().norm().item()
    got = value(mine, step=4, metric="frobenius", layer=0, component="mlp.down", quantity="grad")
    check("grad Frobenius vs a direct backward, relative", abs(got / grad - 1), summation_bound(8 * 31 + 384))

    # activations: the final checkpoint's CKA with itself is 1; earlier ones less; seeds differ
    act = dict(layer=0, component="block", quantity="activation")
    check(
        "CKA of the final block output with itself - 1",
        abs(value(mine, step=8, metric="cka_final", **act) - 1),
        1e3 * EPS64,
    )
    assert value(mine, step=1, metric="cka_final", **act) < 0.999
    for step in (1, 2, 4, 8):
        cka = value(mine, step=step, metric="cka_seeds", **act)
        assert 0 < cka < 0.99  # two seeds: related, not the same representation
        assert cka == value(seed1, step=step, metric="cka_seeds", **act)  # one pair: the same number
        assert value(mine, step=step, metric="token_norm", **act) > 0

    # the plot: one panel per component; the two seeds one line per layer with a min-max band
    from delphi.dynamics.plot import dynamics_figure

    same_recipe = {"tiny-seed0": "tiny", "tiny-seed1": "tiny"}
    figure = dynamics_figure(frame, "weight", "rel_dist_first", same_recipe)
    panels = {ax.get_title(): ax for ax in figure.axes}
    assert list(panels)[:3] == ["embedding", "attn.q", "attn.k"] and "lm_head" in panels
    assert [line.get_label() for line in panels["attn.q"].get_lines()] == ["tiny L0 (2 seeds)"]
    assert len(panels["attn.q"].collections) == 1  # the band
    (line,) = panels["attn.q"].get_lines()
    per_seed = frame[(frame["component"] == "attn.q") & (frame["metric"] == "rel_dist_first")]
    np.testing.assert_allclose(
        line.get_ydata(), per_seed.groupby("step")["value"].mean().to_numpy(), rtol=1e-15
    )
    apart = dynamics_figure(frame, "weight", "rel_dist_first", {"tiny-seed0": "a", "tiny-seed1": "b"})
    assert len([ax for ax in apart.axes if ax.get_title() == "attn.q"][0].get_lines()) == 2
    for png in result.plots:
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in result.plots] == [
        "weight.rel_dist_first.png", "grad.frobenius.png", "activation.cka_final.png",
    ]  # fmt: skip


def test_resumes_per_checkpoint_bitwise_and_a_new_probe_is_kept_apart(seeds_dir, stories_data, tmp_path):
    out = tmp_path / "dyn"
    kw = dict(probe=stories_data / "data", sequences=8, out_dir=out, steps="1,4,8", plots=[])
    run_dynamics([seeds_dir / "tiny-seed0"], **kw)
    first = pq.read_table(out / "dynamics.parquet")
    (cache,) = (out / CACHE).iterdir()
    files = sorted((cache / "runs").rglob("*.parquet"))
    assert [f.name.split("-")[0] for f in files] == ["step1", "step4", "step8"]
    stamps = {f: f.stat().st_mtime_ns for f in files}

    again = run_dynamics([seeds_dir / "tiny-seed0"], **kw)
    assert (again.computed, again.skipped) == (0, 3)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    # a checkpoint lost (as a kill before its rename leaves it): only that one is measured again, the same bits
    files[1].unlink()
    third = run_dynamics([seeds_dir / "tiny-seed0"], **kw)
    assert (third.computed, third.skipped) == (1, 2)
    assert pq.read_table(out / "dynamics.parquet").equals(first)
    # the same checkpoints and probe in a fresh folder: bitwise the same numbers
    fresh = run_dynamics([seeds_dir / "tiny-seed0"], **(kw | {"out_dir": tmp_path / "fresh"}))
    assert fresh.computed == 3 and pq.read_table(tmp_path / "fresh" / "dynamics.parquet").equals(first)

    # another probe: measured apart, never mixed with the first; the first's results stay
    other = run_dynamics([seeds_dir / "tiny-seed0"], **(kw | {"sequences": 4}))
    assert (other.computed, other.skipped) == (3, 0) and other.probe["sequences"] == 4
    assert len(list((out / CACHE).iterdir())) == 2 and all(f.exists() for f in files if f != files[1])
    table = read(out / "dynamics.parquet")
    q = table[(table["component"] == "attn.q") & (table["metric"] == "frobenius")]
    assert len(q) == 2 * 3  # weight and grad at 3 steps: one probe's rows only
    old = read(tmp_path / "fresh" / "dynamics.parquet")
    weights = lambda f: f[f["quantity"] == "weight"]["value"].to_numpy()  # noqa: E731
    np.testing.assert_array_equal(weights(table), weights(old))  # weights do not depend on the probe
    grads = lambda f: f[f["quantity"] == "grad"]["value"].to_numpy()  # noqa: E731
    assert not np.array_equal(grads(table), grads(old))  # gradients do


def test_a_run_that_gained_a_checkpoint_is_measured_again(seeds_dir, stories_data, tmp_path):
    """Numbers measured against an older final checkpoint (cka_final) are never mixed with newer ones."""
    run = tmp_path / "run"
    shutil.copytree(seeds_dir / "tiny-seed0", run)
    (run / "step8").rename(tmp_path / "step8")  # the run as it was before its last checkpoint
    kw = dict(probe=stories_data / "data", sequences=4, out_dir=tmp_path / "dyn", plots=[])
    before = run_dynamics([run], **kw)
    assert before.computed == 3 and value(
        read(tmp_path / "dyn" / "dynamics.parquet"), step=4, layer=0, metric="cka_final"
    ) == pytest.approx(1.0, abs=1e-12)
    (tmp_path / "step8").rename(run / "step8")
    after = run_dynamics([run], **kw)
    assert (after.computed, after.skipped) == (4, 0)  # every step's cka_final has a new reference
    fresh = run_dynamics([run], **(kw | {"out_dir": tmp_path / "fresh"}))
    assert pq.read_table(tmp_path / "dyn" / "dynamics.parquet").equals(
        pq.read_table(tmp_path / "fresh" / "dynamics.parquet")
    )
    assert fresh.computed == 4


def test_sigkill_then_rerun_measures_only_what_is_missing(seeds_dir, stories_data, tmp_path):
    out = tmp_path / "dyn"
    args = [sys.executable, "-m", "delphi", "dynamics", str(seeds_dir / "tiny-seed1"), "--probe",
            str(stories_data / "data"), "--sequences", "64", "--out", str(out), "--plot", "grad.l2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    deadline = time.monotonic() + 120
    while not list((out / CACHE).rglob("step*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = sorted(p.name for p in (out / CACHE).rglob("step*.parquet"))
    assert 1 <= len(done) and not (out / "dynamics.parquet").exists()
    again = run_dynamics(
        [seeds_dir / "tiny-seed1"], probe=stories_data / "data", out_dir=out, plots=["grad.l2"]
    )
    assert (again.computed, again.skipped) == (4 - len(done), len(done))
    whole = run_dynamics(
        [seeds_dir / "tiny-seed1"], probe=stories_data / "data", out_dir=tmp_path / "w", plots=[]
    )
    assert whole.computed == 4
    assert pq.read_table(out / "dynamics.parquet").equals(pq.read_table(tmp_path / "w" / "dynamics.parquet"))


def test_mamba_components(mamba_run, stories_data, tmp_path):
    result = run_dynamics([mamba_run], probe=stories_data / "data", sequences=4, out_dir=tmp_path / "m", steps="1,8",
                          plots=["weight.effective_rank"])  # fmt: skip
    frame = read(result.table)
    assert set(frame["architecture"]) == {"MambaForCausalLM"} and sorted(set(frame["step"])) == [1, 8]
    layer1 = set(frame[(frame["layer"] == 1) & (frame["quantity"] == "weight")]["component"])
    assert layer1 == {
        "norm",
        "in_proj",
        "conv1d",
        "conv1d.bias",
        "x_proj",
        "dt_proj",
        "dt_proj.bias",
        "A_log",
        "D",
        "out_proj",
    }
    assert "lm_head" not in set(frame["component"])  # tied to the embedding: reported once, as embedding
    d = frame[(frame["component"] == "D") & (frame["quantity"] == "weight")]
    assert set(d["metric"]) == {"l2", "gini", "hoyer", "rel_dist_first", "rel_dist_prev"}
    conv = frame[(frame["component"] == "conv1d") & (frame["quantity"] == "weight") & (frame["step"] == 8)]
    assert (
        1 <= conv[conv["metric"] == "effective_rank"]["value"].min() <= 4
    )  # 32 channels x 4 taps: rank <= 4
    grads = frame[(frame["quantity"] == "grad") & (frame["component"] == "A_log")]
    assert (grads["value"] > 0).all() and len(grads) == 2 * 2 * 3  # 2 layers x 2 steps x 3 norms
    assert set(frame[frame["quantity"] == "activation"]["layer"]) == {0, 1}
    assert [p.name for p in result.plots] == ["weight.effective_rank.png"]


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # httpx, inside huggingface_hub
def test_a_hub_repo_gives_the_local_runs_numbers(hub_server, seeds_dir, stories_data, tmp_path):
    from delphi.hub.push import push_run

    run = seeds_dir / "tiny-seed0"
    push_run(run, "org/tiny-seed0", retry_wait=0.05)
    kw = dict(probe=stories_data / "data", sequences=4, steps="2,8", plots=[])
    remote = run_dynamics(["org/tiny-seed0"], out_dir=tmp_path / "hub", **kw)
    local = run_dynamics([run], out_dir=tmp_path / "local", **kw)
    assert remote.computed == local.computed == 2
    a, b = read(remote.table), read(local.table)
    assert a.drop(columns="value").equals(b.drop(columns="value"))
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())


def test_bad_inputs_fail_before_any_work(seeds_dir, stories_data, tmp_path, capsys):
    out = tmp_path / "dyn"
    run = seeds_dir / "tiny-seed0"
    data = stories_data / "data"

    def fails(match, runs=(run,), **kw):
        kw = {"probe": data, "sequences": 4, "out_dir": out} | kw
        with pytest.raises(DelphiError, match=match):
            run_dynamics(list(runs), **kw)

    fails(r"no checkpoint step3; available: step1, step2, step4, step8", steps="1,3")
    fails(r"--steps 'last' is not a step", steps="last")
    fails(r"no such directory: .*missing", runs=[tmp_path / "missing"])
    fails(r"--plot 'weight.frobenus' .*did you mean 'weight.frobenius'", plots=["weight.frobenus"])
    fails(r"--sequences must be >= 1, got 0", sequences=0)
    fails(r"asks for 100000 sequences but 'validation' of .* has \d+", sequences=100000)
    fails(r"feature 'ids' not found", feature="ids")
    fails(r"split 'test' not found", split="test")
    fails(rf"one checkpoint \(a step folder\); .*pass '{run}' --steps 8", runs=[run / "step8"])
    big = tmp_path / "big"
    big.mkdir()
    pq.write_table(__import__("pyarrow").table({"tokens": [[0, 5, 999]]}), big / "validation-00000.parquet")
    fails(r"token id 999 but 'tiny-seed0' has vocab_size 384", probe=big, sequences=1)
    assert not out.exists(), "nothing may be written"
    capsys.readouterr()  # the datasets progress of the calls above
    error = cli_error(capsys, ["dynamics", str(run), "--probe", str(data), "--steps", "9", "--out", str(out)])
    assert "no checkpoint step9" in error
    assert not out.exists()


def test_cli_dynamics_with_the_runs_own_dataset(seeds_dir, tmp_path):
    """Without --probe, the first run's recipe's dataset is the probe (here the embedded corpus, tokenized)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "o"
    args = [sys.executable, "-m", "delphi", "dynamics", str(seeds_dir), "--steps", "step2,8", "--sequences", "4",
            "--out", str(out), "--plot", "activation.cka_seeds", "--plot", "weight.gini"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 checkpoint(s) measured, 0 already done" in proc.stdout
    assert f"-> {out / 'activation.cka_seeds.png'}" in proc.stdout
    frame = read(out / "dynamics.parquet")
    assert sorted(set(frame["step"])) == [2, 8] and (frame["metric"] == "cka_seeds").sum() == 2 * 2
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0 and "0 checkpoint(s) measured, 4 already done" in proc.stdout
