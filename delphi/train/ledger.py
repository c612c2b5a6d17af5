"""The training ledger on disk: every sequence's loss at the step that trained on it (recipe `ledger: true`).

One row per (optimizer step, sequence it trained on): `step` (1-based, as `step{N}`), `epoch` (from 0),
`index` (the sequence's row in the train split) and `loss` (its mean next-token cross-entropy under the
weights before that step's update: what the step's own forward computed, see delphi.train.ledger_capture).

`{out_dir}/ledger/` is a parquet dataset of parts `steps{A}-{B}.parquet`, one per checkpoint interval
(A = the interval's first step, B = the checkpoint's), each written atomically before its checkpoint
(`step{B}`) is finalized. Rows are sorted by (step, index): the file does not depend on how many processes
trained the run. A part is only *held* once `step{B}` is complete; a part caught by a crash between its
write and its checkpoint's is ignored by readers and dropped when the run resumes (`truncate`), which also
drops the rows past the checkpoint a run resumes from, so the ledger holds every step once.

Compact: int32 step, int16 epoch, int32 index (int64 past 2**31 sequences), float32 loss; zstd, with
`index` delta-encoded (sorted within a step) and `loss` byte-stream-split, about 4-5 bytes a row
(`estimate_size`; 10 epochs over 1M sequences: see the README).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from delphi import atomic
from delphi.errors import DelphiError
from delphi.layout import LEDGER_DIR, list_checkpoints

COLUMNS = ("step", "epoch", "index", "loss")
_PART = re.compile(r"^steps(\d+)-(\d+)\.parquet$")
_INT32_MAX = 2**31 - 1


def ledger_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / LEDGER_DIR


def part_name(first: int, last: int) -> str:
    """`steps{first}-{last}.parquet`, zero-padded so names sort by step."""
    return f"steps{first:09d}-{last:09d}.parquet"


def schema(index_type=None):
    import pyarrow as pa

    return pa.schema(
        [
            ("step", pa.int32()),
            ("epoch", pa.int16()),
            ("index", index_type or pa.int32()),
            ("loss", pa.float32()),
        ]
    )


def as_table(step, epoch, index, loss):
    """The rows as a pyarrow table in the ledger's dtypes, sorted by (step, index)."""
    import pyarrow as pa

    step, epoch, index = (np.asarray(x, dtype=np.int64).reshape(-1) for x in (step, epoch, index))
    loss = np.asarray(loss, dtype=np.float32).reshape(-1)
    if not (len(step) == len(epoch) == len(index) == len(loss)):
        raise DelphiError("ledger columns of different lengths")
    order = np.lexsort((index, step))
    wide = len(index) and int(index.max()) > _INT32_MAX
    index_type = pa.int64() if wide else pa.int32()
    columns = [
        step[order].astype(np.int32),
        epoch[order].astype(np.int16),
        index[order].astype(np.int64 if wide else np.int32),
        loss[order],
    ]
    return pa.Table.from_arrays([pa.array(c) for c in columns], schema=schema(index_type))


def _write_table(path: Path, table) -> None:
    import pyarrow.parquet as pq

    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=9,
        use_dictionary=["step", "epoch"],
        column_encoding={"index": "DELTA_BINARY_PACKED", "loss": "BYTE_STREAM_SPLIT"},
    )


def write_part(out_dir: str | os.PathLike, step, epoch, index, loss) -> Path | None:
    """Write the rows of one checkpoint interval as one part (atomically); None when there are no rows."""
    table = as_table(step, epoch, index, loss)
    if table.num_rows == 0:
        return None
    steps = table.column("step").to_numpy()
    folder = ledger_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / part_name(int(steps.min()), int(steps.max()))
    atomic.write_atomically(path, lambda temp: _write_table(temp, table))
    return path


def parts(out_dir: str | os.PathLike) -> list[tuple[int, int, Path]]:
    """Every part file in the ledger folder as (first step, last step, path), by step."""
    folder = ledger_dir(out_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _PART.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), int(match.group(2)), entry))
    return sorted(found)


def held_parts(out_dir: str | os.PathLike, up_to: int | None = None) -> list[tuple[int, int, Path]]:
    """The parts the run holds: ending at or before its newest complete checkpoint (and `up_to`)."""
    saved = list_checkpoints(out_dir)
    if not saved:
        return []
    limit = saved[-1][0] if up_to is None else min(up_to, saved[-1][0])
    return [p for p in parts(out_dir) if p[1] <= limit]


def truncate(out_dir: str | os.PathLike, step: int) -> list[str]:
    """Drop every row past `step` (the checkpoint a run starts from; 0 for a fresh start); returns the names
    of the parts removed or rewritten. A part that straddles `step` (the checkpoint schedule changed) is
    rewritten, atomically, with its rows up to `step`."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    changed = []
    for first, last, path in parts(out_dir):
        if last <= step:
            continue
        if first > step:
            path.unlink(missing_ok=True)
        else:
            table = pq.read_table(path)
            table = table.filter(pc.less_equal(table.column("step"), step))
            atomic.write_atomically(
                path.with_name(part_name(first, step)), lambda t, kept=table: _write_table(t, kept)
            )
            path.unlink(missing_ok=True)
        changed.append(path.name)
    return changed


@dataclass(frozen=True)
class LedgerSummary:
    """What a run's ledger holds: rows, the steps it covers, its size on disk."""

    rows: int
    first_step: int
    last_step: int
    parts: int
    bytes: int

    def as_meta(self) -> dict:
        return {
            "dir": LEDGER_DIR,
            "rows": self.rows,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "parts": self.parts,
            "bytes": self.bytes,
            "columns": list(COLUMNS),
        }


def summary(out_dir: str | os.PathLike, up_to: int | None = None, *, held=None) -> LedgerSummary | None:
    """Rows, steps and bytes of the ledger up to `up_to` (from the parts' footers); None if it has none."""
    held = held_parts(out_dir, up_to) if held is None else held
    if not held:
        return None
    stats = [path.stat() for _, _, path in held]
    rows = sum(
        _rows(str(path), s.st_ino, s.st_mtime_ns, s.st_size)
        for (_, _, path), s in zip(held, stats, strict=True)
    )
    return LedgerSummary(rows, held[0][0], held[-1][1], len(held), sum(s.st_size for s in stats))


@functools.lru_cache(maxsize=65536)
def _rows(path: str, inode: int, mtime_ns: int, size: int) -> int:
    """Rows of a part, from its footer; cached by (path, inode, mtime, size): each checkpoint's summary reads
    only the new part's footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def read(out_dir: str | os.PathLike, *, steps=None, indices=None, up_to: int | None = None):
    """The held rows (a pyarrow table sorted by step, index), optionally only some steps or sequences."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    held = held_parts(out_dir, up_to)
    if steps is not None:
        wanted = np.unique(np.asarray(steps, dtype=np.int64))
        held = [p for p in held if ((wanted >= p[0]) & (wanted <= p[1])).any()]
    tables = []
    for _, _, path in held:
        table = pq.read_table(path)
        if steps is not None:
            table = table.filter(pc.is_in(table.column("step"), pa.array(wanted, pa.int32())))
        if indices is not None:
            wanted_idx = pa.array(np.asarray(indices, dtype=np.int64), pa.int64())
            table = table.filter(pc.is_in(table.column("index").cast(pa.int64()), wanted_idx))
        tables.append(table)
    if not tables:
        return schema().empty_table()
    return pa.concat_tables(tables, promote_options="permissive")


def estimate_size(
    sequences: int, epochs: int, batch: int = 256, seed: int = 0, sample_steps: int = 400
) -> int:
    """Bytes on disk of the ledger of `epochs` epochs over `sequences` sequences at global batch `batch`,
    measured by writing `sample_steps` steps of realistic rows (random order, losses 1..5) and scaling."""
    import tempfile

    rng = np.random.default_rng(seed)
    rows = sample_steps * batch
    step = np.repeat(np.arange(1, sample_steps + 1), batch)
    index = rng.permutation(sequences)[:rows] if rows <= sequences else rng.integers(0, sequences, rows)
    loss = (1.0 + 4.0 * rng.random(rows)).astype(np.float32)
    table = as_table(step, np.zeros(rows), index, loss)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sample.parquet"
        _write_table(path, table)
        per_row = path.stat().st_size / rows
    return int(per_row * sequences * epochs)
