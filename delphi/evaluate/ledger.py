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
