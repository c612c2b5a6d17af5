"""`delphi curves` on two tiny real runs: one line per run, a real PNG image, the numbers in a CSV."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from delphi.errors import DelphiError
from delphi.evaluate.curves import Curve, curves_figure, load_curve, plot_curves
from delphi.layout import list_checkpoints, read_checkpoint_meta

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
    # matplotlib's first two line colours (C0 blue, C1 orange): one line drawn for each run
    assert pixels_near(pixels, (31, 119, 180)) > 200
    assert pixels_near(pixels, (255, 127, 14)) > 200
    assert pixels_near(pixels, (44, 160, 44)) == 0  # no third line (C2 green)

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
