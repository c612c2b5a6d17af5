"""Training data: fixed-length token sequences (column `tokens`), loaded and checked before training starts.

A wrong dataset (other tokenizer, other sequence length, text instead of tokens) must fail in seconds
with a message that says what was found, not hours later as an index error inside an embedding.
"""

from __future__ import annotations

import os

import numpy as np

from delphi.data.splits import load_split
from delphi.errors import DelphiError
from delphi.recipe import Recipe

TOKENS = "tokens"
_CHECK_BATCH_ROWS = 65_536


def load_token_split(source: str | os.PathLike, split: str, feature: str = TOKENS):
    """One split of a token dataset as a `datasets.Dataset` with the single column `tokens`.

    `source` is anything `delphi.data.splits.load_split` takes (local dir/file or hub id; `train[:10%]` slicing).
    """
    ds = load_split(source, split)
    if feature not in ds.column_names:
        raise DelphiError(
            f"feature {feature!r} not found in {str(source)!r} (split {split!r}); "
            f"available columns: {ds.column_names}"
        )
    ds = ds.select_columns([feature])
    if feature != TOKENS:
        ds = ds.rename_column(feature, TOKENS)
    return ds


def _list_column_type(ds, source, split):
    import pyarrow as pa

    arrow_type = ds.features.arrow_schema.field(TOKENS).type
    is_list = pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
    if not (is_list or pa.types.is_fixed_size_list(arrow_type)) or not pa.types.is_integer(
        arrow_type.value_type
    ):
        raise DelphiError(
            f"column {TOKENS!r} of {str(source)!r} (split {split!r}) has type {arrow_type}, expected a list of "
            "integer token ids: tokenize the text first (`delphi dataset`)"
        )


def check_token_dataset(ds, *, seq_len: int, vocab_size: int, source: str | os.PathLike, split: str) -> None:
    """Fail with a clear `DelphiError` unless every row of `ds[tokens]` is `seq_len` ids in [0, vocab_size).

    Vectorized over arrow batches (no Python loop over rows or tokens): a few seconds for millions of rows.
    """
    import pyarrow.compute as pc

    where = f"{str(source)!r} (split {split!r})"
    if TOKENS not in ds.column_names:
        raise DelphiError(f"column {TOKENS!r} not found in {where}; available columns: {ds.column_names}")
    _list_column_type(ds, source, split)
    if len(ds) == 0:
        raise DelphiError(f"{where} has no sequences")

    min_len, max_len = np.iinfo(np.int64).max, -1
    min_id, max_id = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    nulls = 0
    for batch in ds.select_columns([TOKENS]).with_format("arrow").iter(batch_size=_CHECK_BATCH_ROWS):
        column = batch.column(TOKENS)
        nulls += column.null_count
        lengths = pc.min_max(pc.list_value_length(column))
        min_len = min(min_len, lengths["min"].as_py())
        max_len = max(max_len, lengths["max"].as_py())
        values = pc.list_flatten(column)
        nulls += values.null_count
        ids = pc.min_max(values)
        if ids["min"].is_valid:
            min_id = min(min_id, ids["min"].as_py())
            max_id = max(max_id, ids["max"].as_py())

    if nulls:
        raise DelphiError(f"{where} has {nulls} missing (null) sequences or token ids")
    if min_len != max_len:
        raise DelphiError(
            f"sequences in {where} have mixed lengths (from {min_len} to {max_len} tokens); "
            f"expected every sequence to have seq_len={seq_len} tokens"
        )
    if max_len != seq_len:
        raise DelphiError(
            f"sequences in {where} have {max_len} tokens, expected seq_len={seq_len}: the dataset was "
            "tokenized for another sequence length"
        )
    if min_id < 0 or max_id >= vocab_size:
        raise DelphiError(
            f"token ids in {where} range from {min_id} to {max_id}, but the vocabulary has {vocab_size} ids "
            f"(0..{vocab_size - 1}): the dataset was tokenized with another tokenizer"
        )


def as_model_inputs(ds):
    """A `tokens` dataset as the Trainer reads it: one column `input_ids`, rows as numpy arrays.

    Renaming (not copying) keeps the data memory-mapped and stops the Trainer's `remove_unused_columns`
    from dropping `tokens`, which no model's `forward` accepts. Other dataset types pass through.
    """
    import datasets

    if isinstance(ds, dict):
        return {name: as_model_inputs(split) for name, split in ds.items()}
    if not isinstance(ds, datasets.Dataset):
        return ds
    if TOKENS not in ds.column_names:
        raise DelphiError(f"the dataset has no {TOKENS!r} column; columns: {ds.column_names}")
    return ds.select_columns([TOKENS]).rename_column(TOKENS, "input_ids").with_format("numpy")


def collate_sequences(rows: list[dict]) -> dict:
    """Stack equal-length sequences into `input_ids` and `labels` (a copy of the ids; the model shifts them).

    No attention mask: sequences are never padded.
    """
    import torch

    ids = torch.from_numpy(
        np.stack([np.asarray(row["input_ids"]) for row in rows]).astype(np.int64, copy=False)
    )
    return {"input_ids": ids, "labels": ids.clone()}


def load_run_data(recipe: Recipe, vocab_size: int):
    """(train, validation) token datasets of a recipe, checked against its seq_len and the model's vocab."""
    data = recipe.data
    train = load_token_split(data.path, data.train_split, data.feature)
    check_token_dataset(
        train, seq_len=recipe.seq_len, vocab_size=vocab_size, source=data.path, split=data.train_split
    )
    validation = load_token_split(data.path, data.validation_split, data.feature)
    if data.validation_size is not None:
        if data.validation_size > len(validation):
            raise DelphiError(
                f"data.validation_size {data.validation_size} is larger than the validation split "
                f"{data.validation_split!r} of {data.path!r} ({len(validation)} sequences)"
            )
        validation = validation.select(range(data.validation_size))
    check_token_dataset(
        validation,
        seq_len=recipe.seq_len,
        vocab_size=vocab_size,
        source=data.path,
        split=data.validation_split,
    )
    if len(train) < recipe.batch_size:
        raise DelphiError(
            f"the train split of {data.path!r} has {len(train)} sequences, fewer than one batch "
            f"(batch_size {recipe.batch_size})"
        )
    return train, validation
