"""The order in which training sequences are seen: a function of (dataset size, data seed, epoch) only.

Never of world size, dataloader workers, the torch/numpy global RNG or library versions, so one recipe
trains on the same data in the same order on 1 CPU or 8 GPUs, and a resumed run sees what an
uninterrupted run would have seen.

The algorithm (exact, so any language can reproduce it; all arithmetic is on unsigned 64-bit integers,
wrapping modulo 2**64):

    GAMMA = 0x9E3779B97F4A7C15
    mix(z):                                   # splitmix64's output function, a bijection on 64 bits
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        return z ^ (z >> 31)
    key   = mix(mix(seed mod 2**64) ^ (epoch mod 2**64))
    k[i]  = mix(key + (i + 1) * GAMMA)        # i = 0 .. n-1: the first n outputs of splitmix64(key)
    permutation = indices 0 .. n-1 sorted by k[i] ascending

`mix` is a bijection and `(i + 1) * GAMMA` is distinct for every i < 2**64 (GAMMA is odd), so the keys
never tie and any correct sort gives the same permutation.

Batches: `DeterministicEpochSampler` drops the final partial *global* batch, so every optimizer step
trains on exactly `global_batch_size` sequences: step s of an epoch (counted from 0 within the epoch)
uses `permutation[s*B:(s+1)*B]`. When n is a multiple of B each sequence is seen exactly once per
epoch; otherwise at most once, and the `n % B` sequences left out change from epoch to epoch.

Why this holds whatever the world size: the Trainer's dataloader cuts the sampler's order into
per-device micro-batches of size m, and accelerate's `BatchSamplerShard` gives process r the
micro-batches r, r+W, r+2W, ... (W processes). With G gradient-accumulation micro-steps per optimizer
step, B = m * G * W, and step s consumes global micro-batches s*G*W .. (s+1)*G*W - 1 across all
processes: exactly the sequences `permutation[s*B:(s+1)*B]`. Because the sampler yields a multiple of
B sequences, the micro-batch count is a multiple of W and accelerate never pads an epoch with repeats.
(`split_batches=True` slices each micro-batch of m*W across processes instead: the same set per step.)

The released delphi suite's order (`order="delphi-v0.2"`, recipe key `data.order`), for training on exactly
the data stream of the original stories models: a Fisher-Yates shuffle driven by C++'s `minstd_rand`
(x -> 48271 x mod 2**31 - 1). For epoch e (from 0), a generator seeded with (10000 + seed) mod (2**31 - 1)
skips e draws and its next draw seeds the shuffle's own generator; the shuffle swaps item i with item
`draw % (i + 1)` for i from n - 1 down to 1. Batches are cut from it exactly as above (n // B steps an epoch).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from delphi.errors import DelphiError
from delphi.recipe.schema import DATA_ORDERS  # recipe `data.order` (re-exported)

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB

_MINSTD_A = 48271
_MINSTD_M = 2**31 - 1
_MINSTD_BLOCK = 1 << 16


def _mix_int(z: int) -> int:
    """splitmix64's output function on one Python int (exact, no overflow warnings)."""
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _mix_array(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function on a uint64 array (numpy array arithmetic wraps modulo 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MUL1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MUL2)
    return z ^ (z >> np.uint64(31))


def epoch_key(seed: int, epoch: int) -> int:
    """The 64-bit splitmix64 state that (seed, epoch) start from."""
    return _mix_int(_mix_int(int(seed) & _MASK64) ^ (int(epoch) & _MASK64))


def epoch_permutation(n: int, seed: int, epoch: int, order: str = "hash") -> np.ndarray:
    """The order (int64 indices 0..n-1) of `n` items in `epoch` for `seed`; see the module docstring."""
    if n < 0:
        raise DelphiError(f"cannot order {n} items: the number of items must be >= 0")
    if epoch < 0:
        raise DelphiError(f"epoch must be >= 0, got {epoch}")
    if order == "delphi-v0.2":
        return delphi_v02_permutation(n, seed, epoch)
    if order != "hash":
        raise DelphiError(f"unknown data order {order!r}; expected one of {', '.join(DATA_ORDERS)}")
    counters = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GAMMA)
    counters += np.uint64(epoch_key(seed, epoch))
    return np.argsort(_mix_array(counters)).astype(np.int64, copy=False)


def _minstd_next(state: int, draws: int = 1) -> int:
    """The state of minstd_rand after `draws` draws from `state` (each draw returns the new state)."""
    return state * pow(_MINSTD_A, draws, _MINSTD_M) % _MINSTD_M


def _minstd_draws(state: int, count: int) -> np.ndarray:
    """The next `count` outputs of minstd_rand from `state`, computed in blocks (x_k = x_0 * a**k mod m)."""
    powers = np.empty(min(count, _MINSTD_BLOCK), dtype=np.uint64)
    value = 1
    for k in range(len(powers)):  # a**1 .. a**block mod m; products below stay under 2**62
        value = value * _MINSTD_A % _MINSTD_M
        powers[k] = value
    out = np.empty(count, dtype=np.uint64)
    for start in range(0, count, len(powers) or 1):
        size = min(len(powers), count - start)
        out[start : start + size] = np.uint64(state) * powers[:size] % np.uint64(_MINSTD_M)
        state = int(out[start + size - 1])
    return out


def delphi_v02_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The original delphi v0.2 `shuffle_epoch` of indices 0..n-1 (see the module docstring)."""
    shuffle_seed = _minstd_next((10_000 + int(seed)) % _MINSTD_M, epoch + 1)
    if shuffle_seed == 0:  # minstd_rand's only fixed point; the original would assert on it too
        raise DelphiError(f"data seed {seed} gives a degenerate delphi-v0.2 shuffle")
    items = list(range(n))
    if n > 1:
        draws = _minstd_draws(shuffle_seed, n - 1)
        swaps = (draws % np.arange(n, 1, -1, dtype=np.uint64)).tolist()  # i = n-1 .. 1: draw % (i + 1)
        for i, j in zip(range(n - 1, 0, -1), swaps, strict=True):
            items[i], items[j] = items[j], items[i]
    return np.asarray(items, dtype=np.int64)


class DeterministicEpochSampler(Sampler[int]):
    """Yields `epoch_permutation(n, seed, epoch)` cut to a whole number of global batches.

    The Trainer calls `set_epoch` before each epoch; `global_batch_size` (sequences per optimizer step,
    over all processes and accumulation steps) sets how much of the tail is dropped.
    """

    def __init__(self, num_items: int, seed: int, *, global_batch_size: int = 1, order: str = "hash"):
        if order not in DATA_ORDERS:
            raise DelphiError(f"unknown data order {order!r}; expected one of {', '.join(DATA_ORDERS)}")
        if global_batch_size < 1:
            raise DelphiError(f"global batch size must be >= 1, got {global_batch_size}")
        if num_items < global_batch_size:
            raise DelphiError(
                f"the training set has {num_items} sequences, fewer than one global batch of "
                f"{global_batch_size}: use more data or a smaller batch size"
            )
        self.num_items = num_items
        self.seed = seed
        self.global_batch_size = global_batch_size
        self.order = order
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_items // self.global_batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.global_batch_size

    def __iter__(self) -> Iterator[int]:
        permutation = epoch_permutation(self.num_items, self.seed, self.epoch, self.order)
        return iter(permutation[: len(self)].tolist())
