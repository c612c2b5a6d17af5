"""A metric of the dynamics table against tokens seen: one panel per component, one line per layer of
each recipe (seeds: their mean and min-max band, as `delphi curves` draws them), one PNG per metric.

Lines are grouped by `delphi.evaluate.curves.group_lines` (so copies of one run count once and seeds of a
recipe become one line with a band); colour follows the layer (viridis, first layer dark), the marker the
recipe, the line style the architecture.
"""

from __future__ import annotations

import re
from pathlib import Path

from delphi import atomic
from delphi.dynamics.metrics import GRAD_MATRIX_METRICS, MATRIX_METRICS, VECTOR_METRICS
from delphi.errors import DelphiError, did_you_mean
from delphi.evaluate.curves import Curve, group_lines, line_styles

KNOWN = {
    "weight": (*MATRIX_METRICS, "l2", "rel_dist_first", "rel_dist_prev"),
    "grad": (*GRAD_MATRIX_METRICS, "l2"),
    "activation": ("token_norm", "cka_final", "cka_seeds"),
}
assert set(VECTOR_METRICS) <= set(KNOWN["weight"])
DEFAULT_PLOTS = ["weight.rel_dist_first", "grad.frobenius", "activation.cka_final"]
_MARKERS = ("o", "s", "^", "D", "v", "P")


def check_plots(plots: list[str]) -> list[str]:
    """Each `QUANTITY.METRIC` checked against what the table holds (before any work)."""
    names = [f"{q}.{m}" for q, metrics in KNOWN.items() for m in metrics]
    for plot in plots:
        if plot not in names:
            raise DelphiError(
                f"--plot {plot!r} is not a quantity.metric of the table{did_you_mean(plot, names)} "
                f"(expected one of {', '.join(names)})"
            )
    return list(dict.fromkeys(plots))


def _curves(frame, quantity: str, metric: str, identities: dict[str, str | None]) -> dict[str, list[Curve]]:
    """{component: curves}, one curve per run and layer, its points (tokens_seen, value, step); a run's
    identity (its recipe apart from seeds, from `identities` by run label) with the layer added, so that
    the seeds of one recipe (and only they) share a line."""
    rows = frame[(frame["quantity"] == quantity) & (frame["metric"] == metric) & (frame["tokens_seen"] > 0)]
    out: dict[str, list[Curve]] = {}
    keys = ["component", "run", "layer"]
    for (component, run, layer), part in rows.groupby(keys, sort=False, dropna=False):
        first = part.iloc[0]
        recipe = first["recipe"]
        suffix = (
            run[len(recipe) :]
            if run.startswith(recipe) and re.fullmatch(r"-seed\d+", run[len(recipe) :])
            else ""
        )
        where = "" if layer != layer else f" L{int(layer)}"  # NaN: a model-wide component
        seeds = tuple(None if s != s else int(s) for s in (first["seed_init"], first["seed_data"]))
        points = sorted(
            (
                (int(t), float(v), int(s))
                for t, v, s in zip(part["tokens_seen"], part["value"], part["step"], strict=True)
            ),
            key=lambda p: p[2],
        )
        out.setdefault(component, []).append(
            Curve(
                name=f"{recipe}{where}{suffix}",
                source=run,
                points=points,
                identity=None if identities.get(run) is None else f"{identities[run]}|{layer}",
                seeds=seeds,
                parameters=None if first["parameters"] != first["parameters"] else int(first["parameters"]),
                architecture=first["architecture"],
            )
        )
    return out


def dynamics_figure(frame, quantity: str, metric: str, identities: dict[str, str | None] | None = None):
    """A matplotlib Figure of `quantity.metric`, one panel per component."""
    import math

    from matplotlib import colormaps
    from matplotlib.figure import Figure

    by_component = _curves(frame, quantity, metric, identities or {})
    panels = max(1, len(by_component))
    cols = min(4, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4 * cols, 3.2 * rows), dpi=100, layout="constrained")
    layers = sorted({int(x) for x in frame["layer"].dropna().unique()}) or [0]
    cmap = colormaps["viridis"]
    recipes = list(dict.fromkeys(frame["recipe"]))
    for i, (component, curves) in enumerate(by_component.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        lines = group_lines(curves)
        for line, style in zip(lines, line_styles(lines), strict=True):
            name = line.curves[0].name
            found = re.search(r" L(\d+)", name)
            layer = int(found.group(1)) if found else None
            fraction = 0.0 if layer is None or len(layers) == 1 else layers.index(layer) / (len(layers) - 1)
            color = cmap(0.85 * fraction) if layer is not None else (0.3, 0.3, 0.3, 1.0)
            recipe = frame.loc[frame["run"] == line.curves[0].source, "recipe"].iloc[0]
            marker = _MARKERS[recipes.index(recipe) % len(_MARKERS)]
            if len(line.curves) > 1:
                ax.fill_between(line.tokens, line.low, line.high, color=color, alpha=0.25, linewidth=0)
            ax.plot(line.tokens, line.mean, marker=marker, markersize=3, linewidth=1.2, color=color,
                    linestyle=style, label=line.label)  # fmt: skip
        ax.set_xscale("log")
        ax.tick_params(axis="x", which="minor", labelbottom=False)  # a few checkpoints: labels would overlap
        ax.set_title(component, fontsize="medium")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel(metric)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
    if not by_component:
        fig.add_subplot().text(0.5, 0.5, f"no {quantity}.{metric} values", ha="center", va="center")
    fig.suptitle(f"{quantity} {metric} over training")
    return fig


def write_plots(table, out: Path, plots: list[str], identities: dict[str, str | None]) -> list[Path]:
    """One PNG per `QUANTITY.METRIC`: `out/QUANTITY.METRIC.png`."""
    frame = table.to_pandas()
    written = []
    for plot in plots:
        quantity, metric = plot.split(".", 1)
        figure = dynamics_figure(frame, quantity, metric, identities)
        path = out / f"{plot}.png"
        atomic.write_atomically(path, lambda temp, f=figure: f.savefig(temp, format="png"))
        written.append(path)
    return written
