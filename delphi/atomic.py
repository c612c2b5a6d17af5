"""Writing files and folders so that a crash, a kill or a full disk never leaves a half-written one.

Every file delphi writes goes through this module: a file is written under a hidden temp name beside its
target, flushed to disk, and renamed into place (rename is atomic on POSIX file systems); the directory is
flushed too, so the rename survives a power loss. A reader therefore sees the old file, or the new one,
never a mixture. The formats delphi writes (text, JSON, lines, CSV, parquet) each have a writer here;
anything else passes its own writing function to `write_atomically`. A command's output folder
(`--out-dir`) goes through `OutputFolder`: checked and refused unless `--overwrite` before any work,
written beside, then installed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from delphi.errors import DelphiError
from delphi.inputs import check_output_dir

T = TypeVar("T")


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a directory's entries (new names, renames) to disk; a no-op where directories cannot be opened."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file and directory under `folder` to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_file(os.path.join(root, name))
        fsync_dir(root)


def temp_path(path: Path) -> Path:
    """The hidden name a file is written under before it is renamed to `path` (unique per process)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomically(path: str | os.PathLike, write: Callable[[Path], T]) -> T:
    """Call `write(temp)` to write a temp file beside `path`, flush it, rename it to `path`; return what
    `write` returned. On any failure (a full disk included) the temp file is removed and `path` is left
    as it was."""
    path = Path(path)
    temp = temp_path(path)
    try:
        result = write(temp)
        fsync_file(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return result


def write_text(path: str | os.PathLike, text: str) -> Path:
    write_atomically(path, lambda temp: temp.write_text(text, encoding="utf-8"))
    return Path(path)


def write_json(path: str | os.PathLike, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Write each string as one line (a newline added); return how many were written."""

    def write(temp: Path) -> int:
        count = 0
        with open(temp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
                count += 1
        return count

    return write_atomically(path, write)


def write_csv(path: str | os.PathLike, header: list[str], rows: Iterable[list]) -> int:
    """Write a CSV file (the header, then the rows); return how many rows were written."""

    def write(temp: Path) -> int:
        count = 0
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in rows:
                writer.writerow(row)
                count += 1
        return count

    return write_atomically(path, write)


def write_parquet(path: str | os.PathLike, batches: Iterable, schema=None) -> int:
    """Stream pyarrow record batches (or tables) into one parquet file; return the rows written.

    `schema` is needed only when `batches` may be empty (the file then has the schema and no rows);
    otherwise it is the first batch's.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(temp: Path) -> int:
        rows, writer = 0, None
        try:
            for batch in batches:
                if writer is None:
                    writer = pq.ParquetWriter(temp, schema or batch.schema)
                if isinstance(batch, pa.Table):
                    writer.write_table(batch)
                else:
                    writer.write_batch(batch)
                rows += batch.num_rows
            if writer is None:
                if schema is None:
                    raise DelphiError(f"nothing to write to {str(path)!r}: no rows and no schema")
                writer = pq.ParquetWriter(temp, schema)
        finally:
            if writer is not None:
                writer.close()
        return rows

    return write_atomically(path, write)


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Hard-link `source` to `target` (instant, no extra disk), or copy it where links are not possible."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def replace_dir(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Flush folder `source` and rename it to `target`, replacing a folder of that name if there is one.

    An existing `target` is first renamed aside (`.{name}.old`) and deleted only after `source` is in
    place, so at every moment one complete folder holds the name (or, for an instant, the aside copy).
    """
    source, target = Path(source), Path(target)
    fsync_tree(source)
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(target, aside)
    os.replace(source, target)
    fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside)
    return target


@dataclass(frozen=True)
class OutputFolder:
    """A command's `--out-dir`, claimed before any work: what it already holds of this command's output.

    `claim` checks the folder can be written and refuses one that already holds such output unless
    `overwrite`; `staging` gives a folder beside it to write the new files into; `install` moves them in
    (a new folder appears complete at once; in an existing one each file is replaced atomically, and old
    output files the new ones did not replace are removed last). Other files in the folder are kept.
    """

    path: Path
    existing: tuple[Path, ...]

    @classmethod
    def claim(
        cls,
        path: str | os.PathLike,
        *,
        finds: Callable[[Path], list[Path]],
        what: str,
        overwrite: bool,
        option: str = "--out-dir",
    ) -> OutputFolder:
        """`finds(folder)` lists the files of this command's output in an existing folder (`what` names it)."""
        path = check_output_dir(path, what=option)
        existing = tuple(finds(path)) if path.is_dir() else ()
        if existing and not overwrite:
            names = ", ".join(p.name for p in existing[:5]) + (", ..." if len(existing) > 5 else "")
            raise DelphiError(
                f"{option} {str(path)!r} already holds {what} ({names}); pass --overwrite to replace it"
            )
        return cls(path, existing)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """An empty hidden folder beside the output (same file system, so files move in by rename);
        removed on leaving, whatever happened. Only its top-level files are installed: subfolders are
        the caller's scratch (e.g. a hub-shaped copy of the output)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_name(f".{self.path.name}.staging-{os.getpid()}")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        try:
            yield staged
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def install(self, staged: Path) -> Path:
        files = [p for p in sorted(Path(staged).iterdir()) if p.is_file()]
        if not self.path.exists():
            building = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            for f in files:
                os.replace(f, building / f.name)
            return replace_dir(building, self.path)
        for f in files:
            fsync_file(f)
            os.replace(f, self.path / f.name)
        fsync_dir(self.path)
        fresh = {f.name for f in files}
        for old in self.existing:
            if old.name not in fresh:
                old.unlink(missing_ok=True)
        return self.path
