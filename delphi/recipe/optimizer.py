"""The optimizer values of a recipe's `training:` section, checked without a model or data.

One check for both places that need it: `delphi train` runs it before building the optimizer
(delphi.train.run), and `delphi suite` runs it on every run before any run starts, where building an
optimizer would need a model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# TrainingArguments key -> (what a valid value is, the test)
_RANGES = {
    "learning_rate": (">= 0", lambda v: v >= 0),
    "adam_beta1": ("in [0, 1)", lambda v: 0 <= v < 1),
    "adam_beta2": ("in [0, 1)", lambda v: 0 <= v < 1),
    "adam_epsilon": (">= 0", lambda v: v >= 0),
    "weight_decay": (">= 0", lambda v: v >= 0),
}
_NAMES = ("optim", "lr_scheduler_type")
OPTIMIZER_KEYS = (*_RANGES, *_NAMES)


def optimizer_values(training: dict[str, Any]) -> dict[str, Any]:
    """The optimizer values a `training:` section gives TrainingArguments (its defaults where unset)."""
    from transformers import TrainingArguments

    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments) if f.name in OPTIMIZER_KEYS}
    return {key: training.get(key, default) for key, default in defaults.items()}


def optimizer_value_problems(values: dict[str, Any]) -> list[str]:
    """'training.KEY is VALUE; expected ...' for each value out of range (learning rate, betas, epsilon,
    weight decay: any optimizer refuses them) or optimizer / schedule name transformers does not know."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    problems = []
    for key, (expected, ok) in _RANGES.items():
        value = values.get(key)
        if value is not None and (math.isnan(value) or not ok(value)):
            problems.append(f"training.{key} is {value!r}; expected {expected}")
    for key, names in (("optim", OptimizerNames), ("lr_scheduler_type", SchedulerType)):
        value = values.get(key)
        if value is not None and getattr(value, "value", value) not in {n.value for n in names}:
            problems.append(
                f"training.{key} is {value!r}; expected one of {', '.join(n.value for n in names)}"
            )
    return problems
