"""Which optimizer steps get a checkpoint: dense early (1, 2, 4, ..., 512), then regular, always the last.

Learning-dynamics research needs many checkpoints where the model changes fastest (the start) and
comparable checkpoints across a suite (the same step numbers for every model of a suite).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

from delphi.errors import DelphiError
from delphi.recipe.schema import check_steps

logger = logging.getLogger(__name__)


def positive_int(value, name: str) -> int:
    """`value` if it is a positive integer (not a bool), else a DelphiError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DelphiError(f"{name} must be a positive integer, got {value!r}")
    return value


def per_epoch_steps(max_steps: int, per_epoch: int, steps_per_epoch: int) -> list[int]:
    """`per_epoch` evenly spaced steps in each epoch (rounded to the nearest step, the last at the epoch's end)."""
    steps = []
    for epoch_start in range(0, max_steps, steps_per_epoch):
        for j in range(1, per_epoch + 1):
            # round(j * steps_per_epoch / per_epoch), halves up, in exact integer arithmetic
            offset = (2 * j * steps_per_epoch + per_epoch) // (2 * per_epoch)
            if offset >= 1:
                steps.append(epoch_start + offset)
    return steps


def checkpoint_steps(
    max_steps: int,
    *,
    every: int | None,
    steps: Iterable[int] = (),
    per_epoch: int | None = None,
    steps_per_epoch: int | None = None,
) -> list[int]:
    """Sorted unique steps in [1, max_steps] to checkpoint at; `max_steps` (the final model) is always one.

    The union of: the explicit `steps` (e.g. 1, 2, 4, ..., 512), every `every`-th step, and `per_epoch`
    evenly spaced steps per epoch of `steps_per_epoch` steps. Explicit steps beyond `max_steps` are
    dropped with a logged warning (a short demo run may use a suite's long schedule).
    """
    max_steps = positive_int(max_steps, "max_steps")
    chosen = {max_steps}
    if every is not None:
        every = positive_int(every, "checkpoint interval `every`")
        chosen.update(range(every, max_steps + 1, every))
    steps = check_steps(steps)
    beyond = sorted(s for s in steps if s > max_steps)
    if beyond:
        logger.warning(
            "dropping %d checkpoint step(s) beyond max_steps=%d: %s",
            len(beyond),
            max_steps,
            format_steps(beyond),
        )
    chosen.update(s for s in steps if s <= max_steps)
    if per_epoch is not None:
        per_epoch = positive_int(per_epoch, "checkpoints per epoch")
        if steps_per_epoch is None:
            raise DelphiError("checkpoints per epoch need the number of steps per epoch (steps_per_epoch)")
        steps_per_epoch = positive_int(steps_per_epoch, "steps_per_epoch")
        if per_epoch > steps_per_epoch:
            logger.warning(
                "%d checkpoints per epoch asked but an epoch has only %d steps: checkpointing every step",
                per_epoch,
                steps_per_epoch,
            )
        chosen.update(s for s in per_epoch_steps(max_steps, per_epoch, steps_per_epoch) if s <= max_steps)
    return sorted(chosen)


def _run_end(steps: Sequence[int], start: int) -> int:
    """End (exclusive) of the longest doubling or constant-step run beginning at `start`."""
    best = start + 1
    if start + 1 >= len(steps):
        return best
    diff = steps[start + 1] - steps[start]
    end = start + 1
    while end + 1 < len(steps) and steps[end + 1] - steps[end] == diff:
        end += 1
    best = max(best, end + 1)
    end = start
    while end + 1 < len(steps) and steps[end + 1] == 2 * steps[end]:
        end += 1
    return max(best, end + 1)


def format_steps(steps: Sequence[int], *, min_run: int = 5) -> str:
    """Compact text for a step list: runs of >= `min_run` doubling or evenly spaced steps become `a, b, c, ..., z`.

    `[1, 2, 4, ..., 512, 1000, 2000, ..., 20000]` -> "1, 2, 4, ..., 512, 1000, 2000, 3000, ..., 20000 (30 checkpoints)".
    """
    steps = list(steps)
    parts: list[str] = []
    i = 0
    while i < len(steps):
        end = _run_end(steps, i)
        if end - i >= min_run:
            parts += [str(s) for s in steps[i : i + 3]] + ["...", str(steps[end - 1])]
            i = end
        else:
            parts.append(str(steps[i]))
            i += 1
    noun = "checkpoint" if len(steps) == 1 else "checkpoints"
    return f"{', '.join(parts)} ({len(steps)} {noun})"


def training_steps(args, steps_per_epoch: int) -> int:
    """The optimizer steps a run takes, read as Trainer reads them from its TrainingArguments (or from a
    recipe's `training:` mapping, with TrainingArguments' defaults): `max_steps` when positive, else
    `ceil(num_train_epochs * steps_per_epoch)`."""
    if isinstance(args, dict):
        import dataclasses

        from transformers import TrainingArguments

        defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
        max_steps = args.get("max_steps", defaults["max_steps"])
        epochs = args.get("num_train_epochs", defaults["num_train_epochs"])
    else:
        max_steps, epochs = args.max_steps, args.num_train_epochs
    if max_steps is not None and max_steps > 0:
        return int(max_steps)
    return max(1, math.ceil(epochs * steps_per_epoch))
