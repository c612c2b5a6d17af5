"""Writing files and folders so that a crash, a kill or a full disk never leaves a half-written one.

Every file delphi writes goes through a hidden temp name beside its target, is flushed to disk, and is
renamed into place (rename is atomic on POSIX file systems); the directory is flushed too, so the
rename survives a power loss. A reader therefore sees the old file, or the new one, never a mixture.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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
