"""What every optimizer step of a run trained on, recomputed from the recipe and the tokenized data alone.

The data order is a pure function of the train split's size, the data seed, the global batch and the
order (`delphi.train.order` does the arithmetic), so nothing here trains or loads a model: a run's plan
comes from its recipe (a run directory, a recipe file, or a hub repo's newest `step{N}` branch), and a
run has `training.max_steps` steps when that is > 0, else `ceil(num_train_epochs * steps_per_epoch)`.
Tokens are read only for the steps asked. The command's face is `delphi.commands.batches`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from delphi import atomic
from delphi.errors import DelphiError
from delphi.evaluate.sources import list_branches, read_checkpoint_file
from delphi.inputs import check_local_or_hub
from delphi.layout import RECIPE_FILE, list_checkpoints
from delphi.recipe import load_recipe
from delphi.recipe.schedule import training_steps
from delphi.train.data import load_token_split
from delphi.train.order import sequence_steps, step_indices, steps_per_epoch
from delphi.train.sampler import DATA_ORDERS

_STEP_CHUNK_ROWS = 1 << 16  # rows (sequences) handled at once when reading tokens or writing parquet


# ---------------------------------------------------------------- the pure computation


def parse_steps(spec: str, total_steps: int) -> np.ndarray:
    """`"1-100"`, `"7"`, `"1-3,10,20-25"` or `"all"` -> sorted unique 1-based steps, checked against the run."""
    if spec.strip().lower() == "all":
        return np.arange(1, total_steps + 1, dtype=np.int64)
    parts = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise DelphiError(f"--steps {spec!r}: {part!r} is not a step or range; expected e.g. 1-100,250")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if first < 1 or last < first:
            raise DelphiError(f"--steps {spec!r}: {part.strip()!r} is not a range of steps >= 1")
        if last > total_steps:
            raise DelphiError(f"--steps {spec!r}: step {last} is past the run's last step {total_steps}")
        parts.append(np.arange(first, last + 1, dtype=np.int64))
    return np.unique(np.concatenate(parts))


# ---------------------------------------------------------------- a run's plan, from its recipe


@dataclass(frozen=True)
class BatchPlan:
    """Everything the data order of one run depends on, plus where its tokens and recipe are."""

    name: str
    n: int  # sequences in the train split
    seed: int  # seeds.data
    batch: int  # global batch size
    order: str  # data.order
    total_steps: int
    seq_len: int
    recipe: object  # the delphi.recipe.Recipe
    recipe_dir: Path | None  # where a recipe's own modules (e.g. --stat) are looked for

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n, self.batch)

    def indices(self, steps) -> np.ndarray:
        return step_indices(self.n, self.seed, self.batch, self.order, steps, total_steps=self.total_steps)

    def sequence_steps(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return sequence_steps(self.n, self.seed, self.batch, self.order, self.total_steps, indices)


def total_steps(recipe, steps_per_epoch: int) -> int:
    """The run's optimizer steps, exactly as `delphi train` decides them."""
    return training_steps(recipe.training, steps_per_epoch)


def find_recipe(source: str | os.PathLike) -> tuple[Path | str, Path | None]:
    """Where the recipe of a run directory, recipe file or hub repo is: (a file, or the YAML text for a
    hub repo; the directory the recipe's own modules live in, or None).

    A run directory gives its `recipe.yaml` (or, without one, its newest step folder's); a hub repo id
    gives the `recipe.yaml` of its newest `step{N}` branch.
    """
    source = str(source)
    path = Path(source)
    if path.is_file():
        return path, path.resolve().parent
    if path.is_dir():
        if (path / RECIPE_FILE).is_file():
            return path / RECIPE_FILE, path.resolve()
        for _, folder in reversed(list_checkpoints(path)):
            if (folder / RECIPE_FILE).is_file():
                return folder / RECIPE_FILE, path.resolve()
        raise DelphiError(
            f"{source!r} is a directory without {RECIPE_FILE} (nor a step folder holding one): "
            "expected a run directory, a recipe file or a hub repo id"
        )
    check_local_or_hub(source, what="a run directory, a recipe file or a hub repo id", files_ok=True)
    branches = list_branches(source)
    if not branches:
        raise DelphiError(f"hub repo {source!r} has no step{{N}} branch holding {RECIPE_FILE}")
    return read_checkpoint_file(source, branches[-1], RECIPE_FILE), None


def load_source_recipe(source: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()):
    """(Recipe, its directory or None) of a run directory, recipe file or hub repo, with `--set` overrides."""
    found, recipe_dir = find_recipe(source)
    # callbacks only matter to training: a saved recipe may name modules this machine does not have
    overrides = [*overrides, "callbacks=[]"]
    if isinstance(found, Path):
        return load_recipe([found], overrides), recipe_dir
    with tempfile.TemporaryDirectory(prefix="delphi-batches-") as folder:
        path = Path(folder) / RECIPE_FILE
        atomic.write_text(path, found)
        return load_recipe([path], overrides), None


def load_plan(recipe, recipe_dir: Path | None = None):
    """(`BatchPlan`, train split) of a recipe: the split (its `data.path`) is memory-mapped, only its
    length is read here."""
    order = getattr(recipe.data, "order", "hash")
    if order not in DATA_ORDERS:
        raise DelphiError(f"data.order {order!r} is not one of {', '.join(DATA_ORDERS)}")
    data = recipe.data
    dataset = load_token_split(data.path, data.train_split, data.feature)
    n = len(dataset)
    if n < recipe.batch_size:
        raise DelphiError(
            f"the train split of {data.path!r} has {n} sequences, fewer than one batch "
            f"(batch_size {recipe.batch_size})"
        )
    per_epoch = steps_per_epoch(n, recipe.batch_size)
    plan = BatchPlan(
        name=recipe.name,
        n=n,
        seed=recipe.seeds.data,
        batch=recipe.batch_size,
        order=order,
        total_steps=total_steps(recipe, per_epoch),
        seq_len=recipe.seq_len,
        recipe=recipe,
        recipe_dir=recipe_dir,
    )
    return plan, dataset


def describe(plan: BatchPlan) -> str:
    epochs = plan.total_steps / plan.steps_per_epoch
    return (
        f"{plan.name}: {plan.n:,} train sequences, global batch {plan.batch}, {plan.total_steps:,} steps "
        f"({plan.steps_per_epoch:,} per epoch, {epochs:.4g} epochs), data seed {plan.seed}, order {plan.order}"
    )


# ---------------------------------------------------------------- tokens, text, statistics


def read_tokens(dataset, indices: np.ndarray) -> np.ndarray:
    """Rows `indices` of a `tokens` dataset as an int64 array [len(indices), seq_len] (only those rows are read)."""
    import pyarrow.compute as pc

    flat_indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if flat_indices.size == 0:
        return np.empty((0, 0), dtype=np.int64)
    table = dataset.with_format("arrow")[flat_indices.tolist()]
    column = table.column("tokens")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max():
        raise DelphiError(f"train sequences have mixed lengths ({lengths.min()} to {lengths.max()} tokens)")
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return values.reshape(flat_indices.size, int(lengths[0]))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "tolist"):  # torch tensors
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def step_stats(plan: BatchPlan, dataset, steps, function: Callable, name: str) -> Iterator[str]:
    """One JSON line `{"step": s, name: function(s, tokens)}` per step; tokens: int64 [batch, seq_len]."""
    steps = np.asarray(steps, dtype=np.int64)
    chunk = max(1, _STEP_CHUNK_ROWS // plan.batch)
    for start in range(0, steps.size, chunk):
        block = steps[start : start + chunk]
        indices = plan.indices(block)
        tokens = read_tokens(dataset, indices).reshape(block.size, plan.batch, -1)
        for step, batch_tokens in zip(block.tolist(), tokens, strict=True):
            value = function(step, batch_tokens)
            try:
                yield json.dumps({"step": step, name: value}, default=_json_default)
            except (TypeError, ValueError) as e:
                raise DelphiError(
                    f"--stat {name} returned a value JSON cannot hold at step {step}: {e}"
                ) from e


# ---------------------------------------------------------------- rows and output


def rows_for_steps(plan: BatchPlan, steps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, position, index) for every sequence of `steps`, flattened in training order."""
    steps = np.asarray(steps, dtype=np.int64)
    indices = plan.indices(steps)
    return (
        np.repeat(steps, plan.batch),
        np.tile(np.arange(plan.batch, dtype=np.int64), steps.size),
        indices.reshape(-1),
    )


def ledger_losses(source, recipe, rows) -> np.ndarray | None:
    """The loss of each row (step, position, index) in the run's training ledger (NaN where it holds none),
    or None when the run (the `source` directory, or a recipe's `out_dir`) has no ledger."""
    from delphi.evaluate.ledger import describe, sequence_losses
    from delphi.train import ledger

    run = Path(source) if Path(source).is_dir() else Path(recipe.out_dir)
    if ledger.summary(run) is None:
        return None
    step, _, index = rows
    held = sequence_losses(run, np.unique(index))
    print(describe(run), file=sys.stderr)
    return np.array(
        [held.get((s, i), np.nan) for s, i in zip(step.tolist(), index.tolist(), strict=True)], np.float32
    )


def row_batches(
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    dataset=None,
    *,
    tokens: bool = True,
    tokenizer=None,
    losses: np.ndarray | None = None,
) -> Iterator:
    """pyarrow RecordBatches with columns step, position, index[, loss][, tokens][, text], in chunks;
    `loss` (from the training ledger) when `losses` are given, null where the ledger holds none."""
    import pyarrow as pa

    step, position, index = rows
    for start in range(0, max(step.size, 1), _STEP_CHUNK_ROWS):
        sl = slice(start, start + _STEP_CHUNK_ROWS)
        columns = {
            "step": pa.array(step[sl], pa.int64()),
            "position": pa.array(position[sl], pa.int32()),
            "index": pa.array(index[sl], pa.int64()),
        }
        if losses is not None:
            columns["loss"] = pa.array(losses[sl], pa.float32(), mask=np.isnan(losses[sl]))
        if tokens or tokenizer is not None:
            ids = read_tokens(dataset, index[sl])
            if tokens:
                columns["tokens"] = pa.array(list(ids.astype(np.int32)), pa.list_(pa.int32()))
            if tokenizer is not None:
                columns["text"] = pa.array(tokenizer.batch_decode(ids.tolist()), pa.string())
        yield pa.RecordBatch.from_pydict(columns)


def format_rows(batches: Iterator, *, max_tokens: int = 12, max_text: int = 100) -> Iterator[str]:
    """A readable table of the rows (tokens and text shortened; `--out` keeps them whole)."""
    header = False
    for batch in batches:
        data = batch.to_pydict()
        if not header:
            yield "step\tposition\tindex\t" + ("loss\t" if "loss" in data else "") + "tokens / text"
            header = True
        for i in range(batch.num_rows):
            if "text" in data:
                text = data["text"][i].replace("\n", "\\n")
                shown = repr(text if len(text) <= max_text else text[:max_text] + "...")
            elif "tokens" in data:
                ids = data["tokens"][i]
                shown = " ".join(map(str, ids[:max_tokens])) + (
                    f" ... ({len(ids)})" if len(ids) > max_tokens else ""
                )
            else:
                shown = ""
            if "loss" in data:
                loss = data["loss"][i]
                shown = ("-" if loss is None else f"{loss:.4f}") + "\t" + shown
            yield f"{data['step'][i]}\t{data['position'][i]}\t{data['index'][i]}\t{shown}"
