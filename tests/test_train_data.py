"""Token datasets: loading a split, the checks that run before training, and collation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from delphi.errors import DelphiError
from delphi.train.data import as_model_inputs, check_token_dataset, collate_sequences, load_token_split

SEQ_LEN, VOCAB = 8, 50


def write_split(folder, split, column, name="tokens"):
    folder.mkdir(exist_ok=True)
    pq.write_table(
        pa.table({name: column, "doc": list(range(len(column)))}), folder / f"{split}-00000.parquet"
    )
    return folder


@pytest.fixture
def token_dir(tmp_path):
    rows = np.random.default_rng(0).integers(0, VOCAB, (30, SEQ_LEN)).tolist()
    return write_split(tmp_path / "tokens", "train", pa.array(rows, type=pa.list_(pa.int32())))


def check(ds, **kwargs):
    args = {"seq_len": SEQ_LEN, "vocab_size": VOCAB, "source": "src", "split": "train"} | kwargs
    check_token_dataset(ds, **args)


def test_load_token_split_keeps_only_tokens(token_dir):
    ds = load_token_split(token_dir, "train")
    assert ds.column_names == ["tokens"] and len(ds) == 30
    check(ds)
    assert len(load_token_split(token_dir, "train[:10]")) == 10


def test_load_token_split_renames_another_feature(tmp_path):
    folder = write_split(tmp_path / "ids", "train", [[1, 2, 3]] * 4, name="ids")
    ds = load_token_split(folder, "train", feature="ids")
    assert ds.column_names == ["tokens"]
    with pytest.raises(DelphiError, match=r"feature 'tokens' not found.*available columns: \['ids', 'doc'\]"):
        load_token_split(folder, "train")


def test_checks_pass_on_a_selection_with_an_index_mapping(token_dir):
    ds = load_token_split(token_dir, "train").select([5, 1, 7])
    check(ds)


@pytest.mark.parametrize(
    "column,match",
    [
        (["a story", "another"], r"type string.*expected a list of integer token ids"),
        ([[1.5] * SEQ_LEN], r"type list<item: double>"),
        ([[1] * SEQ_LEN, [2] * 5, [3] * 9], r"mixed lengths \(from 5 to 9 tokens\).*seq_len=8"),
        ([[1] * 16, [2] * 16], r"have 16 tokens, expected seq_len=8"),
        ([[1] * SEQ_LEN, [3, 4, 73, 5, 6, 7, 8, 9]], r"range from 1 to 73, but the vocabulary has 50 ids"),
        ([[1] * SEQ_LEN, [-1] * SEQ_LEN], r"range from -1 to 1"),
        ([[1] * SEQ_LEN, None], r"1 missing \(null\)"),
        ([[1] * SEQ_LEN, [1, None, 2, 3, 4, 5, 6, 7]], r"1 missing \(null\)"),
    ],
)
def test_bad_token_datasets_fail_clearly(tmp_path, column, match):
    ds = load_token_split(write_split(tmp_path / "bad", "train", column), "train")
    with pytest.raises(DelphiError, match=match):
        check(ds)


def test_empty_split_and_missing_column(token_dir):
    ds = load_token_split(token_dir, "train")
    with pytest.raises(DelphiError, match="has no sequences"):
        check(ds.select([]))
    with pytest.raises(DelphiError, match="column 'tokens' not found"):
        check(ds.rename_column("tokens", "ids"))


def test_collation_gives_ids_and_unshifted_labels(token_dir):
    ds = as_model_inputs(load_token_split(token_dir, "train"))
    assert ds.column_names == ["input_ids"]
    rows = ds.__getitems__([3, 0, 2])
    batch = collate_sequences(rows)
    expected = torch.tensor(load_token_split(token_dir, "train").select([3, 0, 2])["tokens"])
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].dtype == torch.int64
    assert torch.equal(batch["input_ids"], expected) and torch.equal(batch["labels"], expected)
    assert batch["labels"].data_ptr() != batch["input_ids"].data_ptr()  # a model may edit labels in place
