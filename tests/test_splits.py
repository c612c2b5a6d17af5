import pytest

from delphi.data.splits import load_split, require_text_feature, split_name
from delphi.errors import DelphiError
from delphi.inputs import is_hub_id


def test_split_name_strips_slicing():
    assert split_name("train[:10%]") == "train"
    assert split_name("validation") == "validation"


def test_hub_id_only_when_not_a_local_path(tmp_path, monkeypatch):
    assert is_hub_id("delphi-suite/stories-tokenized")
    assert not is_hub_id("a/b/c")
    assert not is_hub_id("nohubid")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert not is_hub_id("org/name")
    assert not is_hub_id("org/other")  # its first part is a local directory: a path, mistyped


def test_directory_split_and_slicing(text_dir):
    assert len(load_split(text_dir, "train")) == 20
    assert len(load_split(text_dir, "validation")) == 2
    head = load_split(text_dir, "train[:25%]")
    assert len(head) == 5
    assert head["story"] == load_split(text_dir, "train")["story"][:5]


def test_single_file_becomes_the_named_split(text_dir):
    ds = load_split(text_dir / "validation-00000.parquet", "validation[1:]")
    assert ds["n"] == [1]


def test_saved_to_disk_dataset(text_dir, tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": load_split(text_dir, "train")})
    dd.save_to_disk(str(tmp_path / "saved"))
    assert len(load_split(tmp_path / "saved", "train[2:6]")) == 4
    with pytest.raises(DelphiError, match=r"'test' not found.*\['train'\]"):
        load_split(tmp_path / "saved", "test")


def test_unknown_file_type(tmp_path):
    f = tmp_path / "data.xlsx"
    f.write_text("x")
    with pytest.raises(DelphiError, match=r"unknown file type '.xlsx'"):
        load_split(f, "train")


def test_feature_checks(text_dir):
    ds = load_split(text_dir, "train")
    require_text_feature(ds, "story", "x")
    with pytest.raises(DelphiError, match="available columns"):
        require_text_feature(ds, "text", "x")
    with pytest.raises(DelphiError, match="expected a string column"):
        require_text_feature(ds, "n", "x")


def test_any_split_name_in_a_directory(text_dir):
    (text_dir / "validation-00000.parquet").rename(text_dir / "holdout-00000.parquet")
    assert len(load_split(text_dir, "holdout")) == 2
    with pytest.raises(DelphiError, match="'validation' not found"):
        load_split(text_dir, "validation")


def test_rewritten_files_are_not_read_from_a_stale_cache(text_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert load_split(text_dir, "validation")["n"] == [0, 1]
    pq.write_table(pa.table({"story": ["new"], "n": [7]}), text_dir / "validation-00000.parquet")
    assert load_split(text_dir, "validation")["n"] == [7]


def test_an_empty_split_is_one_line_on_stderr(tmp_path):
    """A 0-row parquet file: delphi's one line, not datasets' logged arrow errors and progress bar first."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(pa.table({"story": pa.array([], pa.string())}), empty / "train-00000.parquet")
    for source in (empty, empty / "train-00000.parquet"):
        proc = subprocess.run(
            [sys.executable, "-m", "delphi", "tokenizer", "-i", str(source), "-f", "story",
             "-v", "300", "--out-dir", str(tmp_path / "tok")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 2
        assert proc.stderr == (
            f"delphi tokenizer: error: split 'train' of {str(source)!r} is empty (its data files hold no rows)\n"
        )
        assert not (tmp_path / "tok").exists()


def test_empty_parquet_files_beside_full_ones_are_skipped(text_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"story": pa.array([], pa.string()), "n": pa.array([], pa.int64())}),
        text_dir / "train-00001.parquet",
    )
    assert len(load_split(text_dir, "train")) == 20
