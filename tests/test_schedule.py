"""The checkpoint schedule: dense early steps, regular steps, per-epoch steps, always the final step."""

from __future__ import annotations

import logging

import pytest

from delphi.errors import DelphiError
from delphi.recipe.schedule import checkpoint_steps, format_steps, per_epoch_steps

PYTHIA = [2**k for k in range(10)]  # 1, 2, 4, ..., 512


def test_union_of_early_regular_and_final_steps():
    steps = checkpoint_steps(2500, every=1000, steps=PYTHIA)
    assert steps == PYTHIA + [1000, 2000, 2500]
    assert checkpoint_steps(7, every=None) == [7]
    assert checkpoint_steps(6, every=2, steps=[2, 3, 3]) == [2, 3, 4, 6]


def test_steps_beyond_the_run_are_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="delphi.recipe.schedule"):
        steps = checkpoint_steps(10, every=None, steps=PYTHIA)
    assert steps == [1, 2, 4, 8, 10]
    assert "beyond max_steps=10" in caplog.text and "512" in caplog.text


def test_per_epoch_steps_are_evenly_spaced_and_end_each_epoch():
    # 10 steps per epoch, 3 checkpoints each: round(10/3)=3, round(20/3)=7, 10; the last epoch is partial
    assert per_epoch_steps(25, 3, 10) == [3, 7, 10, 13, 17, 20, 23, 27, 30]
    assert checkpoint_steps(25, every=None, per_epoch=3, steps_per_epoch=10) == [3, 7, 10, 13, 17, 20, 23, 25]
    assert checkpoint_steps(4, every=None, per_epoch=1, steps_per_epoch=2) == [2, 4]
    # more checkpoints than steps: every step, no step 0
    assert checkpoint_steps(4, every=None, per_epoch=5, steps_per_epoch=2) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_steps": 0, "every": None}, "max_steps"),
        ({"max_steps": 10, "every": 0}, "every"),
        ({"max_steps": 10, "every": None, "steps": [0, 5]}, "checkpoint step"),
        ({"max_steps": 10, "every": None, "steps": [-1]}, "checkpoint step"),
        ({"max_steps": 10, "every": None, "per_epoch": 0, "steps_per_epoch": 5}, "per epoch"),
        ({"max_steps": 10, "every": None, "per_epoch": 2}, "steps_per_epoch"),
        ({"max_steps": 2.5, "every": None}, "max_steps"),
    ],
)
def test_nonsense_is_refused(kwargs, match):
    with pytest.raises(DelphiError, match=match):
        checkpoint_steps(**kwargs)


def test_format_steps_is_compact():
    steps = checkpoint_steps(20000, every=1000, steps=PYTHIA)
    assert format_steps(steps) == "1, 2, 4, ..., 512, 1000, 2000, 3000, ..., 20000 (30 checkpoints)"
    assert format_steps([5]) == "5 (1 checkpoint)"
    assert format_steps([1, 2, 3, 7]) == "1, 2, 3, 7 (4 checkpoints)"
