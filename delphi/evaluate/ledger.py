"""Questions to a run's training ledger (delphi.train.ledger): which sequences were hardest or easiest at a
step, and what one sequence's loss was each time it was trained on. `delphi ledger` and
`delphi batches --sequence` are their faces."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from delphi.errors import DelphiError
from delphi.train import ledger as store


def check_run(run: str | os.PathLike) -> Path:
    """The run directory, if it holds a ledger; else one clear error."""
    path = Path(run).expanduser()
    if not path.is_dir():
        raise DelphiError(f"{str(run)!r} is not a run directory")
    if not store.parts(path):
        raise DelphiError(
            f"run {str(run)!r} has no training ledger ({store.ledger_dir(path)} is missing or empty): "
            "train with `ledger: true` in the recipe"
        )
    if store.summary(path) is None:
        raise DelphiError(f"run {str(run)!r} has ledger parts but no complete checkpoint that holds them yet")
    return path


def describe(run: Path) -> str:
    found = store.summary(run)
    return (
        f"ledger of {run}: {found.rows:,} rows, steps {found.first_step}..{found.last_step} "
        f"({found.parts} part(s), {found.bytes / 2**20:.2f} MiB)"
    )


def rank_at_step(run: str | os.PathLike, k: int, *, hardest: bool, step: int | None = None):
    """(step, table of the `k` hardest or easiest sequences at `step`, by loss): columns step, epoch, index,
    loss. `step` defaults to the newest step the ledger holds; a step it does not hold is an error."""
    path = check_run(run)
    option = "--hardest" if hardest else "--easiest"
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise DelphiError(f"{option} must be a whole number >= 1, got {k!r}")
    found = store.summary(path)
    if step is None:
        step = found.last_step
    table = store.read(path, steps=[step])
    if table.num_rows == 0:
        raise DelphiError(
            f"the ledger of {str(run)!r} holds steps {found.first_step}..{found.last_step}, not step {step}"
        )
    loss = table.column("loss").to_numpy()
    order = np.argsort(-loss if hardest else loss, kind="stable")[:k]
    return step, table.take(order)


def sequence_losses(run: str | os.PathLike, indices) -> dict[tuple[int, int], float]:
    """{(step, index): loss} of the sequences `indices` in the run's ledger (every epoch it holds)."""
    table = store.read(check_run(run), indices=indices).to_pydict()
    return {(s, i): loss for s, i, loss in zip(table["step"], table["index"], table["loss"], strict=True)}


def format_ranked(table, texts: list[str] | None = None, *, max_text: int = 100):
    """Lines: rank, step, epoch, index, loss (and the text, shortened)."""
    yield "rank\tstep\tepoch\tindex\tloss" + ("\ttext" if texts is not None else "")
    data = table.to_pydict()
    for rank in range(table.num_rows):
        line = f"{rank + 1}\t{data['step'][rank]}\t{data['epoch'][rank]}\t{data['index'][rank]}\t{data['loss'][rank]:.4f}"
        if texts is not None:
            text = texts[rank].replace("\n", "\\n")
            line += "\t" + repr(text if len(text) <= max_text else text[:max_text] + "...")
        yield line


def step_quantiles(
    run: str | os.PathLike, quantiles=(0.1, 0.5, 0.9)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, quantiles of the per-sequence loss at each step [steps, len(quantiles)], mean loss at each step)."""
    table = store.read(check_run(run))
    steps = table.column("step").to_numpy().astype(np.int64)
    loss = table.column("loss").to_numpy().astype(np.float64)
    unique, starts = np.unique(steps, return_index=True)
    groups = np.split(loss, starts[1:])
    values = np.array([np.quantile(g, quantiles) for g in groups])
    return unique, values, np.array([g.mean() for g in groups])


def plot_ledger(run: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """The spread of the per-sequence training loss at every step (median, 10-90% band, mean) into `out_png`."""
    from matplotlib.figure import Figure

    from delphi import atomic
    from delphi.inputs import check_output_dir

    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise DelphiError(f"--plot {str(out_png)!r} must end in .png")
    check_output_dir(out_png.parent, what=f"--plot {str(out_png)!r}: its folder")
    steps, values, mean = step_quantiles(run)
    fig = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    ax.fill_between(
        steps, values[:, 0], values[:, 2], alpha=0.25, linewidth=0, label="10-90% of the sequences"
    )
    ax.plot(steps, values[:, 1], linewidth=1.5, label="median")
    ax.plot(steps, mean, linewidth=1, linestyle="--", label="mean (the step's loss)")
    ax.set_xscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss of each sequence when trained on")
    ax.set_title(f"training ledger of {Path(run).name}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_atomically(out_png, lambda temp: fig.savefig(temp, format="png"))
    return out_png
