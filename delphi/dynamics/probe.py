"""The probe: a fixed batch of token sequences every checkpoint of every run is measured on.

The first `sequences` rows of one split of a delphi dataset (tokenized, column `tokens`), each cut to
the same length (the shortest of: the runs' `seq_len`, the sequences themselves). Its fingerprint is a
hash of the token ids themselves, so any change (another dataset, split, count or length) is another
probe, whose results are kept apart from this one's (`delphi.dynamics.table`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from delphi.data.splits import load_split
from delphi.errors import DelphiError
from delphi.evaluate.logprobs import token_column


@dataclass(frozen=True)
class Probe:
    ids: np.ndarray  # int64 [sequences, length]
    dataset: str
    split: str
    feature: str

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(str(self.ids.shape).encode())
        digest.update(np.ascontiguousarray(self.ids, dtype="<i8").tobytes())
        return digest.hexdigest()

    @property
    def max_token_id(self) -> int:
        return int(self.ids.max())

    def describe(self) -> dict:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "feature": self.feature,
            "sequences": int(self.ids.shape[0]),
            "length": int(self.ids.shape[1]),
            "fingerprint": self.fingerprint,
        }


def load_probe(dataset: str, split: str, feature: str, sequences: int, max_length: int | None) -> Probe:
    """The first `sequences` rows of `dataset[split]`, cut to `max_length` tokens (or their shortest)."""
    if sequences < 1:
        raise DelphiError(f"--sequences must be >= 1, got {sequences}")
    if max_length is not None and max_length < 2:
        raise DelphiError(f"the probe needs sequences of at least 2 tokens, got a length of {max_length}")
    column = token_column(load_split(dataset, split), feature, dataset)
    if len(column) < sequences:
        raise DelphiError(
            f"the probe asks for {sequences} sequences but {split!r} of {dataset!r} has {len(column)}; "
            "pass a smaller --sequences"
        )
    rows = column.slice(0, sequences).to_pylist()
    length = min(len(r) for r in rows)
    if max_length is not None:
        length = min(length, max_length)
    ids = np.array([r[:length] for r in rows], dtype=np.int64)
    return Probe(ids=ids, dataset=dataset, split=split, feature=feature)
