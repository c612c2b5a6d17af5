"""Which sequences each optimizer step trains on, as arithmetic on indices: the sampler's order cut into steps.

The data order is a pure function of (number of training sequences n, data seed, epoch, global batch B,
order) (`delphi.train.sampler`):

- an epoch has `n // B` optimizer steps (the final partial batch is dropped);
- global step g (1-based, as in Trainer's logs and delphi's `step{g}` checkpoints) is in epoch
  `(g - 1) // steps_per_epoch` (epochs from 0) and trains on positions `s*B .. (s+1)*B - 1` of that
  epoch's permutation, where `s = (g - 1) % steps_per_epoch`.

Vectorized: every index of a 10-epoch run over 900k sequences takes seconds. `delphi batches`
(delphi.evaluate.batches) answers its questions with these functions.
"""

from __future__ import annotations

import math

import numpy as np

from delphi.errors import DelphiError
from delphi.train.sampler import epoch_permutation


def steps_per_epoch(n: int, batch: int) -> int:
    """Optimizer steps in one epoch of `n` sequences at global batch `batch` (the partial batch is dropped)."""
    if batch < 1:
        raise DelphiError(f"global batch size must be >= 1, got {batch}")
    if n < batch:
        raise DelphiError(f"the training set has {n} sequences, fewer than one global batch of {batch}")
    return n // batch


def _check_steps(steps, total_steps: int | None) -> np.ndarray:
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    if steps.size and steps.min() < 1:
        raise DelphiError(f"steps are counted from 1; got step {int(steps.min())}")
    if total_steps is not None and steps.size and steps.max() > total_steps:
        raise DelphiError(f"step {int(steps.max())} is past the run's last step {total_steps}")
    return steps


def step_indices(
    n: int, seed: int, batch: int, order: str = "hash", steps=(), *, total_steps: int | None = None
) -> np.ndarray:
    """The train-split indices each of `steps` (1-based global steps) trains on: int64 [len(steps), batch].

    Row k, column p is the sequence at position p of step `steps[k]`'s global batch, in the order the
    sampler yields them (process r of W takes micro-batches r, r+W, ... of it). One permutation is
    computed per epoch touched.
    """
    per_epoch = steps_per_epoch(n, batch)
    steps = _check_steps(steps, total_steps)
    out = np.empty((steps.size, batch), dtype=np.int64)
    epochs = (steps - 1) // per_epoch
    for epoch in np.unique(epochs):
        rows = np.flatnonzero(epochs == epoch)
        batches = epoch_permutation(n, seed, int(epoch), order)[: per_epoch * batch].reshape(per_epoch, batch)
        out[rows] = batches[(steps[rows] - 1) % per_epoch]
    return out


def sequence_steps(
    n: int, seed: int, batch: int, order: str = "hash", total_steps: int = 0, indices=()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (step, position, index) at which the sequences `indices` were trained, over all epochs.

    Returns three int64 arrays sorted by step then position. A sequence appears at most once an epoch
    (never in an epoch whose dropped tail holds it).
    """
    per_epoch = steps_per_epoch(n, batch)
    indices = np.unique(np.asarray(indices, dtype=np.int64).reshape(-1))
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        bad = int(indices.min() if indices.min() < 0 else indices.max())
        raise DelphiError(f"sequence index {bad} is outside the train split (0 .. {n - 1})")
    found_steps, found_positions, found_indices = [], [], []
    for epoch in range(math.ceil(total_steps / per_epoch)):
        permutation = epoch_permutation(n, seed, epoch, order)
        where = np.empty(n, dtype=np.int64)
        where[permutation] = np.arange(n, dtype=np.int64)
        slot = where[indices]  # each index's place in this epoch's order
        used = slot < per_epoch * batch
        step = epoch * per_epoch + slot // batch + 1
        keep = used & (step <= total_steps)
        found_steps.append(step[keep])
        found_positions.append(slot[keep] % batch)
        found_indices.append(indices[keep])
    if not found_steps:
        return (np.empty(0, np.int64),) * 3
    step, position, index = (np.concatenate(x) for x in (found_steps, found_positions, found_indices))
    by = np.lexsort((position, step))
    return step[by], position[by], index[by]
