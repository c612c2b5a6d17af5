"""Validation loss against tokens seen, read from each checkpoint's `checkpoint.json` (nothing is
recomputed), for one run or a whole suite in one figure (log x-axis), plus every run's numbers as CSV.

A suite is read as recipes x seeds: runs whose saved recipes are equal once seeds, name and the
settings that do not change the weights (checkpoint schedule, logging, hub, ...) are set aside are
seeds of one recipe, drawn as one line (their mean, with a min-max band), labelled by the recipe's
name without the `-seed{k}` suffix `delphi suite` adds. Colour follows model size (parameters, on a log
scale), line style the architecture, so sizes and architectures read at a glance.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from delphi import atomic
from delphi.errors import DelphiError
from delphi.evaluate.sources import (
    checkpoint_meta,
    hub_map,
    is_local,
    list_branches,
    read_checkpoint_file,
    run_name,
)
from delphi.inputs import check_local_or_hub, check_output_dir
from delphi.layout import CONFIG_FILE, list_checkpoints, parse_step
from delphi.models import build_model, count_parameters
from delphi.recipe import Recipe

_SEED_SUFFIX = re.compile(r"-seed\d+$")
_LINE_STYLES = ("-", "--", ":", "-.")
_COLORMAP = "viridis"
_COLOR_RANGE = (0.0, 0.85)  # viridis without its palest yellows, which vanish on white


@dataclass(frozen=True)
class Curve:
    """One run's validation loss over training: points are (tokens_seen, eval_loss, step), by step."""

    name: str  # the recipe name, the legend label
    source: str  # run directory or hub repo id
    points: list[tuple[int, float, int]]
    identity: str | None = None  # the recipe without seeds and name: runs sharing it are seeds of one recipe
    seeds: tuple[int | None, int | None] = (None, None)  # (seeds.init, seeds.data)
    parameters: int | None = None
    architecture: str | None = None

    @property
    def recipe_name(self) -> str:
        """The name without the `-seed{k}` suffix of a suite's seed variant."""
        return _SEED_SUFFIX.sub("", self.name)


def _read_yaml(source: str, branch: str, name: str):
    try:
        return yaml.safe_load(read_checkpoint_file(source, branch, name))
    except (DelphiError, yaml.YAMLError):
        return None


def recipe_identity(recipe: dict) -> str:
    """What decides a run's weights apart from its seeds, as a canonical string."""
    identity = Recipe.identity_of(recipe)
    identity.pop("seeds", None)
    return json.dumps(identity, sort_keys=True, default=str)


def run_details(source: str, branch: str, recipe=None) -> dict:
    """identity, seeds, parameters and architecture from a checkpoint's recipe.yaml and run_context.json."""
    recipe = _read_yaml(source, branch, "recipe.yaml") if recipe is None else recipe
    if not isinstance(recipe, dict):
        return {}
    seeds = recipe.get("seeds") or {}
    model = recipe.get("model") or {}
    context = _read_yaml(source, branch, "run_context.json")  # JSON is YAML
    parameters = context.get("parameters") if isinstance(context, dict) else None
    if not isinstance(parameters, int) and model:
        try:  # an older run: count on the meta device (no weights allocated)
            parameters = count_parameters(build_model(model, device="meta"))[0]
        except Exception:  # a recipe this transformers cannot build: draw it without a size
            parameters = None
    return {
        "identity": recipe_identity(recipe),
        "seeds": (seeds.get("init"), seeds.get("data")),
        "parameters": parameters,
        "architecture": model.get("architecture"),
    }


def load_curves(run_or_repo: str | os.PathLike) -> list[Curve]:
    """The curves of a run directory or hub repo: one per run its checkpoints come from.

    Each checkpoint's name, size, architecture and seeds come from its own `recipe.yaml`, so a hub repo that
    holds branches of two runs (published before delphi refused that) gives two curves, not one line
    through both. Checkpoints without an evaluation are left out.
    """
    source = str(run_or_repo)
    _check_run(source)
    branches = list_branches(source)
    if not branches:
        raise DelphiError(f"{source!r} has no step checkpoints (no complete step{{N}} folder or branch)")
    metas = hub_map(lambda branch: checkpoint_meta(source, branch), branches)
    recipes = hub_map(lambda branch: _read_yaml(source, branch, "recipe.yaml"), branches)
    groups: dict[str, list[int]] = {}
    for i, recipe in enumerate(recipes):
        key = json.dumps(_run_identity(recipe), sort_keys=True, default=str)
        groups.setdefault(key, []).append(i)
    curves = []
    for members in groups.values():
        points = [
            (int(metas[i]["tokens_seen"]), float(metas[i]["eval_loss"]), int(metas[i]["step"]))
            for i in members
            if metas[i].get("eval_loss") is not None and metas[i].get("tokens_seen", 0) > 0
        ]
        if not points:
            continue
        newest = members[-1]
        recipe = recipes[newest]
        name = recipe.get("name") if isinstance(recipe, dict) else None
        curves.append(
            Curve(
                name=str(name) if name else run_name(source, branches),
                source=source,
                points=sorted(points, key=lambda p: p[2]),
                **run_details(source, branches[newest], recipe),
            )
        )
    if not curves:
        raise DelphiError(f"no checkpoint of {source!r} records an eval_loss: nothing to plot")
    return curves


def _run_identity(recipe) -> object:
    """What tells one run's checkpoints from another's: the recipe's name and identity, seeds included."""
    if not isinstance(recipe, dict):
        return None
    try:
        return [recipe.get("name"), Recipe.identity_of(recipe)]
    except (AttributeError, TypeError):
        return [recipe.get("name")]


def load_curve(run_or_repo: str | os.PathLike) -> Curve:
    """The curve of a run directory or hub repo that holds one run (see `load_curves`)."""
    curves = load_curves(run_or_repo)
    if len(curves) > 1:
        raise DelphiError(f"{str(run_or_repo)!r} holds {len(curves)} runs; read them with load_curves")
    return curves[0]


RUNS_EXPECTED = "a run directory, a directory of runs or a hub repo id 'org/name'"


def _check_run(run: str) -> None:
    """A DelphiError unless `run` can be a run, a directory of runs or a hub repo: a missing path, a step
    folder (one checkpoint: its run is its parent) or a model folder outside any run."""
    if not is_local(run):
        check_local_or_hub(run, what=RUNS_EXPECTED)
        return
    path = Path(run).expanduser()
    if not path.is_dir():
        raise DelphiError(f"{run!r} is a file; expected {RUNS_EXPECTED}")
    if (path / CONFIG_FILE).is_file():
        if parse_step(path.name) is not None:
            raise DelphiError(
                f"{run!r} is one checkpoint (a step folder); whole runs are read here: pass its run "
                f"directory {str(path.parent)!r}"
            )
        raise DelphiError(f"{run!r} is a model folder outside any run; expected {RUNS_EXPECTED}")


def _run_key(run: str) -> str:
    """What a run is, however it was named: a local run by its resolved path, a hub repo by its id."""
    return str(Path(run).expanduser().resolve()) if is_local(run) else run


def expand_runs(runs: list[str | os.PathLike]) -> list[str]:
    """Run directories and hub repos as given, with a directory of runs replaced by its runs (sorted);
    a run named more than once (directly, or also inside a directory of runs) is kept once, where it
    first appears. Anything that cannot be a run is a DelphiError that says what was expected."""
    out: dict[str, str] = {}
    for run in map(str, runs):
        _check_run(run)
        path = Path(run)
        found = [run]
        if is_local(run) and not list_checkpoints(path):
            inner = sorted(str(p) for p in path.iterdir() if p.is_dir() and list_checkpoints(p))
            found = inner or found
        for each in found:
            out.setdefault(_run_key(each), each)
    return list(out.values())


@dataclass(frozen=True)
class Line:
    """What the figure draws for one recipe: its seeds' mean loss and min-max band, at shared checkpoints."""

    label: str
    curves: list[Curve]
    tokens: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]


def seed_key(curve: Curve) -> tuple:
    """What makes a run one seed of its recipe: its (seeds.init, seeds.data) pair, or where a run saved no
    seeds, its source."""
    return curve.seeds if None not in curve.seeds else ("source", curve.source)


def distinct_seeds(curves: list[Curve]) -> list[Curve]:
    """One curve per seed pair, the first given: copies of one run (a `cp -a` of its folder, its own hub
    repo) are one seed, not two with a zero-width band."""
    first: dict[tuple, Curve] = {}
    for curve in curves:
        first.setdefault(seed_key(curve), curve)
    return list(first.values())


def group_lines(curves: list[Curve]) -> list[Line]:
    """One line per recipe (curves sharing a name, seed suffix aside, and an identity), in order of first
    appearance.

    A recipe's line is its seeds' mean at the tokens every seed has a checkpoint for, copies of one run
    counted once (`distinct_seeds`); a run without a saved recipe is its own line. Labels are recipe
    names, with the source added where two differ.
    """
    groups: dict[str, list[Curve]] = {}
    for curve in curves:
        # one recipe = the same name (seed suffix aside) and the same computation apart from the seeds
        key = (
            f"{curve.recipe_name}|{curve.identity}"
            if curve.identity is not None
            else f"source:{curve.source}"
        )
        groups.setdefault(key, []).append(curve)
    groups = {key: distinct_seeds(members) for key, members in groups.items()}
    labels = [members[0].recipe_name if len(members) > 1 else members[0].name for members in groups.values()]
    lines = []
    for members, label in zip(groups.values(), labels, strict=True):
        if labels.count(label) > 1:
            label = f"{label} ({members[0].source})"
        if len(members) > 1:
            label = f"{label} ({len(members)} seeds)"
        by_run = [{t: loss for t, loss, _ in c.points} for c in members]
        # the checkpoints every seed has; if they share none, each point averages the seeds that have it
        tokens = sorted(set.intersection(*map(set, by_run)) or set.union(*map(set, by_run)))
        values = [[run[t] for run in by_run if t in run] for t in tokens]
        lines.append(
            Line(
                label=label,
                curves=members,
                tokens=tokens,
                mean=[math.fsum(v) / len(v) for v in values],
                low=[min(v) for v in values],
                high=[max(v) for v in values],
            )
        )
    return lines


def line_colors(lines: list[Line]) -> list[tuple[float, float, float, float]]:
    """A colour per line from a sequential colormap over log(parameters): small dark, large light."""
    from matplotlib import colormaps

    cmap = colormaps[_COLORMAP]
    sizes = [line.curves[0].parameters for line in lines]
    known = [math.log(s) for s in sizes if s]
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    colors = []
    for size in sizes:
        if not size:
            colors.append((0.5, 0.5, 0.5, 1.0))  # size unknown: grey
            continue
        fraction = (math.log(size) - low) / (high - low) if high > low else 0.5
        colors.append(cmap(_COLOR_RANGE[0] + fraction * (_COLOR_RANGE[1] - _COLOR_RANGE[0])))
    return colors


def line_styles(lines: list[Line]) -> list[str]:
    """A line style per architecture, in order of first appearance."""
    architectures = list(dict.fromkeys(line.curves[0].architecture for line in lines))
    return [
        _LINE_STYLES[architectures.index(line.curves[0].architecture) % len(_LINE_STYLES)] for line in lines
    ]


def curves_figure(curves: list[Curve], *, title: str | None = None, ylabel: str = "validation loss"):
    """A matplotlib Figure: one line per recipe (seeds: mean and min-max band), the curves' values (loss,
    or any number measured at each checkpoint) against tokens (log x)."""
    from matplotlib.figure import Figure

    lines = group_lines(curves)
    fig = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for line, color, style in zip(lines, line_colors(lines), line_styles(lines), strict=True):
        if len(line.curves) > 1:
            ax.fill_between(line.tokens, line.low, line.high, color=color, alpha=0.25, linewidth=0)
        ax.plot(
            line.tokens, line.mean, marker="o", markersize=3, linewidth=1.5, color=color, linestyle=style,
            label=line.label,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} over training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _run_labels(curves: list[Curve]) -> list[str]:
    """Run names, with the source added where two runs share a name."""
    names = [c.name for c in curves]
    return [f"{c.name} ({c.source})" if names.count(c.name) > 1 else c.name for c in curves]


CSV_COLUMNS = [
    "run", "recipe", "seed_init", "seed_data", "parameters", "architecture", "source", "step", "tokens_seen",
    "eval_loss",
]  # fmt: skip


def write_csv(curves: list[Curve], path: str | os.PathLike) -> Path:
    """One row per (run, checkpoint): every run's own numbers (the seeds' mean and band are drawn, not written)."""
    rows = (
        [
            label, curve.recipe_name, curve.seeds[0], curve.seeds[1], curve.parameters,
            curve.architecture, curve.source, step, tokens, repr(loss),
        ]
        for curve, label in zip(curves, _run_labels(curves), strict=True)
        for tokens, loss, step in curve.points
    )  # fmt: skip
    atomic.write_csv(path, CSV_COLUMNS, rows)
    return Path(path)


def plot_curves(
    runs: list[str | os.PathLike], out_png: str | os.PathLike = "curves.png", *, title: str | None = None
) -> tuple[Path, Path]:
    """Plot the runs (directories, directories of runs, hub repos) into `out_png`, every run's numbers
    into the same name `.csv`."""
    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise DelphiError(f"--out {str(out_png)!r} must end in .png")
    if not runs:
        raise DelphiError("give at least one run directory or hub repo")
    check_output_dir(out_png.parent, what=f"--out {str(out_png)!r}: its folder")
    # every source is read before anything is written
    curves = [curve for run in expand_runs(runs) for curve in load_curves(run)]
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure = curves_figure(curves, title=title)
    atomic.write_atomically(out_png, lambda temp: figure.savefig(temp, format="png"))
    return out_png, write_csv(curves, out_png.with_suffix(".csv"))
