"""Validation loss against tokens seen, read from each checkpoint's `checkpoint.json` (nothing is
recomputed), for one run or a whole suite in one figure (log x-axis), plus the same numbers as CSV.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from delphi.errors import DelphiError
from delphi.evaluate.sources import checkpoint_meta, list_branches, run_name


@dataclass(frozen=True)
class Curve:
    """One run's validation loss over training: points are (tokens_seen, eval_loss, step), by step."""

    name: str  # the recipe name, the legend label
    source: str  # run directory or hub repo id
    points: list[tuple[int, float, int]]


def load_curve(run_or_repo: str | os.PathLike) -> Curve:
    """The curve of a run directory or hub repo; checkpoints without an evaluation are left out."""
    source = str(run_or_repo)
    branches = list_branches(source)
    if not branches:
        raise DelphiError(f"{source!r} has no step checkpoints (no complete step{{N}} folder or branch)")
    points = []
    for branch in branches:
        meta = checkpoint_meta(source, branch)
        if meta.get("eval_loss") is not None and meta.get("tokens_seen", 0) > 0:
            points.append((int(meta["tokens_seen"]), float(meta["eval_loss"]), int(meta["step"])))
    if not points:
        raise DelphiError(f"no checkpoint of {source!r} records an eval_loss: nothing to plot")
    return Curve(name=run_name(source, branches), source=source, points=sorted(points, key=lambda p: p[2]))


def _labels(curves: list[Curve]) -> list[str]:
    """Recipe names, with the source added where two runs share a name."""
    names = [c.name for c in curves]
    return [f"{c.name} ({c.source})" if names.count(c.name) > 1 else c.name for c in curves]


def curves_figure(curves: list[Curve], *, title: str | None = None):
    """A matplotlib Figure with one line per run: validation loss against tokens seen (log x)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for curve, label in zip(curves, _labels(curves), strict=True):
        tokens, losses, _ = zip(*curve.points, strict=True)
        ax.plot(tokens, losses, marker="o", markersize=3, linewidth=1.5, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss")
    ax.set_title(title or "validation loss over training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def write_csv(curves: list[Curve], path: str | os.PathLike) -> Path:
    """One row per (run, checkpoint): run, source, step, tokens_seen, eval_loss."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "source", "step", "tokens_seen", "eval_loss"])
        for curve, label in zip(curves, _labels(curves), strict=True):
            for tokens, loss, step in curve.points:
                writer.writerow([label, curve.source, step, tokens, repr(loss)])
    os.replace(temp, path)
    return path


def plot_curves(
    runs: list[str | os.PathLike], out_png: str | os.PathLike = "curves.png", *, title: str | None = None
) -> tuple[Path, Path]:
    """Plot the runs (directories or hub repos) into `out_png`, their numbers into the same name `.csv`."""
    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise DelphiError(f"--out {str(out_png)!r} must end in .png")
    if not runs:
        raise DelphiError("give at least one run directory or hub repo")
    curves = [load_curve(run) for run in runs]  # every source is read before anything is written
    out_png.parent.mkdir(parents=True, exist_ok=True)
    temp = out_png.with_name(f".{out_png.name}.tmp")
    curves_figure(curves, title=title).savefig(temp, format="png")
    os.replace(temp, out_png)
    return out_png, write_csv(curves, out_png.with_suffix(".csv"))
