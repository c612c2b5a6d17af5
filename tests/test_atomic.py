"""The one writer: each format's writer leaves the old file (or nothing) when writing fails half-way, and
a command's output folder is refused unless --overwrite, written beside, and installed whole."""

from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delphi import atomic
from delphi.errors import DelphiError


def failing_after(items, count):
    """The first `count` items, then an error: a writer interrupted half-way."""
    for i, item in enumerate(items):
        if i == count:
            raise OSError("No space left on device")
        yield item


def test_each_writer_writes_and_a_failure_leaves_the_old_file(tmp_path):
    table = pa.table({"x": list(range(5))})
    cases = [
        ("a.txt", lambda p, it: atomic.write_lines(p, it), ["one", "two", "three"]),
        ("a.csv", lambda p, it: atomic.write_csv(p, ["x", "y"], it), [[1, "a"], [2, "b"], [3, "c"]]),
        ("a.parquet", lambda p, it: atomic.write_parquet(p, it), table.to_batches(max_chunksize=2)),
    ]
    for name, write, items in cases:
        path = tmp_path / name
        assert write(path, iter(items)) == (5 if name.endswith("parquet") else 3)
        before = path.read_bytes()
        with pytest.raises(OSError, match="No space"):
            write(path, failing_after(items, 1))
        assert path.read_bytes() == before, name
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], "no temp file left"
    assert (tmp_path / "a.txt").read_text() == "one\ntwo\nthree\n"
    assert list(csv.reader((tmp_path / "a.csv").open())) == [["x", "y"], ["1", "a"], ["2", "b"], ["3", "c"]]
    assert pq.read_table(tmp_path / "a.parquet").equals(table)


def test_an_empty_parquet_needs_a_schema(tmp_path):
    schema = pa.schema([("x", pa.int64())])
    assert atomic.write_parquet(tmp_path / "e.parquet", iter(()), schema=schema) == 0
    assert pq.read_table(tmp_path / "e.parquet").schema == schema
    with pytest.raises(DelphiError, match="no rows and no schema"):
        atomic.write_parquet(tmp_path / "f.parquet", iter(()))
    assert not (tmp_path / "f.parquet").exists()


def outputs(folder):
    return sorted(folder.glob("out-*.txt"))


def write_outputs(out, names):
    with out.staging() as staged:
        for name in names:
            (staged / name).write_text(name)
        (staged / "scratch").mkdir()  # a caller's scratch subfolder is never installed
        out.install(staged)


def test_output_folder_new_then_overwritten_keeps_other_files(tmp_path):
    target = tmp_path / "deep" / "out"
    write_outputs(atomic.OutputFolder.claim(target, finds=outputs, what="outputs", overwrite=False),
                  ["out-1.txt", "out-2.txt"])  # fmt: skip
    assert sorted(p.name for p in target.iterdir()) == ["out-1.txt", "out-2.txt"]
    (target / "notes.md").write_text("mine")

    with pytest.raises(
        DelphiError, match=r"already holds outputs \(out-1.txt, out-2.txt\); pass --overwrite"
    ):
        atomic.OutputFolder.claim(target, finds=outputs, what="outputs", overwrite=False)
    write_outputs(
        atomic.OutputFolder.claim(target, finds=outputs, what="outputs", overwrite=True), ["out-1.txt"]
    )
    assert sorted(p.name for p in target.iterdir()) == ["notes.md", "out-1.txt"]  # the stale out-2 is gone
    assert sorted(p.name for p in tmp_path.joinpath("deep").iterdir()) == ["out"], "nothing left beside it"


def test_output_folder_failure_installs_nothing(tmp_path):
    target = tmp_path / "out"
    out = atomic.OutputFolder.claim(target, finds=outputs, what="outputs", overwrite=False)
    with pytest.raises(KeyboardInterrupt), out.staging() as staged:
        (staged / "out-1.txt").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DelphiError, match="is a file, not a directory"):
        atomic.OutputFolder.claim(tmp_path / "f", finds=outputs, what="outputs", overwrite=True)
