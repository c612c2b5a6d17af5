"""`delphi curves` on tiny real runs: one line per recipe (seeds: mean and min-max band), colour by size,
style by architecture, a real PNG image, every run's numbers in a CSV."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from delphi.errors import DelphiError
from delphi.evaluate.curves import (
    Curve,
    curves_figure,
    expand_runs,
    group_lines,
    line_colors,
    line_styles,
    load_curve,
    plot_curves,
)
from delphi.layout import list_checkpoints, read_checkpoint_meta

pytestmark = pytest.mark.slow  # trains real runs (see `make test-fast`)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_runs(stories_data, tmp_path_factory) -> list[Path]:
    from test_logprobs import train_tiny_run
    from tiny import MODEL

    root = tmp_path_factory.mktemp("curves")
    return [
        train_tiny_run(root, stories_data, "tiny-a"),
        train_tiny_run(
            root, stories_data, "tiny-b", model={**MODEL, "hidden_size": 32, "intermediate_size": 64}
        ),
    ]


def viridis_rgb(fraction: float) -> tuple[int, int, int]:
    from matplotlib import colormaps

    return tuple(round(255 * c) for c in colormaps["viridis"](fraction)[:3])


def pixels_near(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    return int((np.abs(image[..., :3].astype(int) - np.array(rgb)).sum(axis=-1) < tolerance).sum())


def test_load_curve_reads_checkpoint_metadata(two_runs):
    run = two_runs[0]
    curve = load_curve(run)
    assert curve.name == "tiny-a" and curve.source == str(run)
    expected = []
    for step, folder in list_checkpoints(run):
        meta = read_checkpoint_meta(folder)
        expected.append((meta["tokens_seen"], meta["eval_loss"], step))
    assert curve.points == expected
    assert [p[2] for p in curve.points] == [1, 2, 4, 8]
    assert [p[0] for p in curve.points] == [256, 512, 1024, 2048]


def test_plot_two_runs_png_and_csv(two_runs, tmp_path):
    png, table = plot_curves(two_runs, tmp_path / "plots" / "curves.png")
    assert png == tmp_path / "plots" / "curves.png" and table == png.with_suffix(".csv")

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (960, 600)
        pixels = np.asarray(image.convert("RGB"))
    # colour follows size: the smaller run at viridis' dark end, the larger at 0.85 of it; one line each
    assert pixels_near(pixels, viridis_rgb(0.0)) > 200
    assert pixels_near(pixels, viridis_rgb(0.85)) > 200
    assert pixels_near(pixels, (31, 119, 180)) == 0  # not matplotlib's default cycle (C0 blue)

    fig = curves_figure([load_curve(r) for r in two_runs])
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["tiny-a", "tiny-b"]
    assert ax.get_xscale() == "log"

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["tiny-a"] * 4 + ["tiny-b"] * 4
    for row in rows:
        meta = read_checkpoint_meta(Path(row["source"]) / f"step{row['step']}")
        assert float(row["eval_loss"]) == meta["eval_loss"]
        assert int(row["tokens_seen"]) == meta["tokens_seen"]


def test_runs_sharing_a_name_are_told_apart(two_runs):
    a = load_curve(two_runs[0])
    twin = Curve(name=a.name, source="elsewhere/tiny-a", points=a.points)
    labels = [line.get_label() for line in curves_figure([a, twin]).axes[0].get_lines()]
    assert labels == [f"tiny-a ({two_runs[0]})", "tiny-a (elsewhere/tiny-a)"]


def test_bad_inputs(two_runs, tmp_path):
    with pytest.raises(DelphiError, match="no step checkpoints"):
        plot_curves([tmp_path], tmp_path / "c.png")
    with pytest.raises(DelphiError, match=r"must end in \.png"):
        plot_curves(two_runs, tmp_path / "c.jpg")
    with pytest.raises(DelphiError, match="no such directory: .*missing.*a run directory"):
        plot_curves([two_runs[0], str(tmp_path / "missing")], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists(), "nothing is written unless every run was read"


def test_cli_curves(two_runs, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "suite.png"
    proc = subprocess.run(
        [sys.executable, "-m", "delphi", "curves", *map(str, two_runs), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"loss curves of 2 run(s) -> {out}" in proc.stdout
    with Image.open(out) as image:
        image.verify()
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 1 + 8


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # httpx, inside huggingface_hub
def test_curves_of_runs_published_to_the_hub(hub_server, two_runs, tmp_path):
    from delphi.hub.push import push_run

    for run in two_runs:
        push_run(run, f"org/{run.name}", retry_wait=0.05)
    remote = load_curve("org/tiny-b")
    assert remote.name == "tiny-b" and remote.source == "org/tiny-b"
    assert remote.points == load_curve(two_runs[1]).points
    png, table = plot_curves(["org/tiny-a", "org/tiny-b"], tmp_path / "hub.png")
    with Image.open(png) as image:
        image.verify()
    with open(table, newline="") as f:
        assert [r["source"] for r in csv.DictReader(f)] == ["org/tiny-a"] * 4 + ["org/tiny-b"] * 4
    with pytest.raises(DelphiError, match="could not list the branches of hub repo 'org/absent'"):
        load_curve("org/absent")


# ---- a directory of runs: recipes x seeds ----


@pytest.fixture(scope="module")
def suite_dir(stories_data, tmp_path_factory) -> Path:
    """A directory of runs as `delphi suite --seeds 0 1 2` names them: tiny-seed{k} (seeds 7+k, 11+k) and
    one wider model, wide (a recipe run as written)."""
    from test_logprobs import train_tiny_run
    from tiny import MODEL

    root = tmp_path_factory.mktemp("suite")
    for k in range(3):
        train_tiny_run(root, stories_data, f"tiny-seed{k}", seeds={"init": 7 + k, "data": 11 + k})
    train_tiny_run(root, stories_data, "wide", model={**MODEL, "hidden_size": 32, "intermediate_size": 64})
    for recipe in root.glob("*.yaml"):
        recipe.unlink()  # only run directories in it
    return root


def metas(run: Path) -> dict[int, dict]:
    return {step: read_checkpoint_meta(folder) for step, folder in list_checkpoints(run)}


def test_seeds_of_a_recipe_are_one_line_with_a_band(suite_dir, tmp_path):
    png, table = plot_curves([suite_dir], tmp_path / "suite.png")
    curves = [load_curve(run) for run in expand_runs([suite_dir])]
    assert [c.name for c in curves] == ["tiny-seed0", "tiny-seed1", "tiny-seed2", "wide"]
    lines = group_lines(curves)
    assert [line.label for line in lines] == ["tiny (3 seeds)", "wide"]

    seeds = [metas(suite_dir / f"tiny-seed{k}") for k in range(3)]
    losses = {step: [m[step]["eval_loss"] for m in seeds] for step in (1, 2, 4, 8)}
    assert all(len(set(v)) == 3 for v in losses.values())  # the seeds really trained differently
    tiny = lines[0]
    assert tiny.tokens == [256, 512, 1024, 2048]
    assert tiny.mean == pytest.approx([sum(v) / 3 for v in losses.values()], rel=1e-12)
    assert tiny.low == [min(v) for v in losses.values()] and tiny.high == [max(v) for v in losses.values()]

    fig = curves_figure(curves)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["tiny (3 seeds)", "wide"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx(tiny.mean)
    (band,) = ax.collections  # one min-max band: the recipe with seeds
    band_y = band.get_paths()[0].vertices[:, 1]
    assert band_y.min() == pytest.approx(min(tiny.low)) and band_y.max() == pytest.approx(max(tiny.high))
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels_near(pixels, viridis_rgb(0.0)) > 200 and pixels_near(pixels, viridis_rgb(0.85)) > 200

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 4  # every run's every checkpoint; no mean rows
    assert [(r["run"], r["recipe"], r["seed_init"], r["seed_data"]) for r in rows[::4]] == [
        ("tiny-seed0", "tiny", "7", "11"),
        ("tiny-seed1", "tiny", "8", "12"),
        ("tiny-seed2", "tiny", "9", "13"),
        ("wide", "wide", "7", "11"),
    ]
    for row in rows:
        run = Path(row["source"])
        context = json.loads((run / f"step{row['step']}" / "run_context.json").read_text())
        assert int(row["parameters"]) == context["parameters"]
        assert row["architecture"] == "LlamaForCausalLM"
        assert float(row["eval_loss"]) == metas(run)[int(row["step"])]["eval_loss"]


def test_copies_of_a_run_count_once(suite_dir, tmp_path):
    """A `cp -a` of a seed's folder is the same seed: the recipe keeps 3 seeds and the same band."""
    copies = tmp_path / "copies"
    shutil.copytree(suite_dir / "tiny-seed0", copies / "tiny-seed0")
    curves = [load_curve(run) for run in expand_runs([suite_dir, copies])]
    assert len(curves) == 5
    (tiny, wide) = group_lines(curves)
    assert tiny.label == "tiny (3 seeds)" and len(tiny.curves) == 3
    assert (tiny.mean, tiny.low, tiny.high) == tuple(
        getattr(group_lines(curves[:4])[0], f) for f in ("mean", "low", "high")
    )
    # a copy on its own with the run it copies: one seed, labelled as the run, no band
    (line,) = group_lines([curves[0], curves[4]])
    assert line.label == "tiny-seed0" and len(line.curves) == 1 and line.low == line.high


def test_colour_follows_size_and_style_the_architecture():
    from matplotlib import colormaps

    def curve(name, parameters, architecture, identity):
        return Curve(
            name, f"src/{name}", [(10, 2.0, 1), (20, 1.5, 2)], identity, (0, 0), parameters, architecture
        )

    curves = [
        curve("llama-1m", 1_000_000, "LlamaForCausalLM", "a"),
        curve("mamba-100k", 100_000, "MambaForCausalLM", "b"),
        curve("llama-10k", 10_000, "LlamaForCausalLM", "c"),
        curve("odd", None, "GPT2LMHeadModel", "d"),
    ]
    lines = group_lines(curves)
    viridis = colormaps["viridis"]
    assert line_colors(lines) == [viridis(0.85), viridis(0.425), viridis(0.0), (0.5, 0.5, 0.5, 1.0)]
    assert line_styles(lines) == ["-", "--", "-", ":"]
    drawn = curves_figure(curves).axes[0].get_lines()
    assert [line.get_linestyle() for line in drawn] == ["-", "--", "-", ":"]
    # seeds whose checkpoints differ: the mean is taken where all of them have one
    a = Curve("x-seed0", "s0", [(10, 3.0, 1), (20, 2.0, 2), (40, 1.0, 4)], "same")
    b = Curve("x-seed1", "s1", [(10, 5.0, 1), (40, 2.0, 4)], "same")
    (line,) = group_lines([a, b])
    assert (line.label, line.tokens, line.mean, line.low, line.high) == (
        "x (2 seeds)",
        [10, 40],
        [4.0, 1.5],
        [3.0, 1.0],
        [5.0, 2.0],
    )


def test_cli_curves_of_a_directory_of_runs(suite_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "suite.png"
    proc = subprocess.run(
        [sys.executable, "-m", "delphi", "curves", str(suite_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"loss curves of 4 run(s) -> {out}" in proc.stdout
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 1 + 16


def test_a_step_folder_or_model_folder_is_not_a_run(two_runs, tmp_path):
    """curves takes runs, directories of runs and hub repos; a step folder is told to pass its run."""
    run = two_runs[0]
    step = run / "step4"
    expected = (
        f"is one checkpoint (a step folder); whole runs are read here: pass its run directory {str(run)!r}"
    )
    for call in (lambda: plot_curves([step], tmp_path / "c.png"), lambda: load_curve(step)):
        with pytest.raises(DelphiError, match=re.escape(f"{str(step)!r} {expected}")):
            call()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(DelphiError, match="model folder outside any run; expected a run directory, a dir"):
        plot_curves([model], tmp_path / "c.png")
    with pytest.raises(DelphiError) as missing:
        plot_curves([tmp_path / "missing"], tmp_path / "c.png")
    assert "step folder" not in str(missing.value)
    assert "(a run directory, a directory of runs or a hub repo id 'org/name')" in str(missing.value)
    assert not (tmp_path / "c.png").exists()


def test_a_run_named_twice_is_one_run(two_runs, tmp_path):
    a, b = two_runs
    # the same run as given, through another path, and inside its directory of runs
    assert expand_runs([a, a, f"{a}/", a.parent / ".." / a.parent.name / a.name, b]) == [str(a), str(b)]
    assert expand_runs([a, a.parent]) == [str(a), str(b)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "twice.png"
    proc = subprocess.run(
        [sys.executable, "-m", "delphi", "curves", str(a), str(a), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"loss curves of 1 run(s) -> {out}" in proc.stdout
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 1 + 4
