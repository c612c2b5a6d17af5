"""Every problem of a recipe that can be known without training, one line each.

Two steps, one vocabulary: `merged_problems` is what loading refuses (the schema, value ranges,
`training:` keys and types, the model section, checkpoint steps, callbacks), naming the file that set
each bad key; `recipe_problems` is what a loaded recipe still meets on this machine (input paths, the
batch split over the processes, the out_dir, a `resume:` checkpoint, optimizer values, reporting
integrations). `delphi validate`, `delphi suite` and `delphi train` make both, so they refuse the same
recipes with the same lines.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import re
import typing
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError, did_you_mean
from delphi.inputs import (
    check_local,
    check_local_or_hub,
    check_output_dir,
    is_hub_id,
    missing_path_error,
    parse_hub_ref,
)
from delphi.layout import has_resume_state, is_complete
from delphi.recipe.model_section import config_problems
from delphi.recipe.optimizer import optimizer_value_problems, optimizer_values
from delphi.recipe.schema import DELPHI_CONTROLLED, MIN_SEQ_LEN, Recipe, check_steps, source_dirs
from delphi.recipe.typecheck import type_problem
from delphi.recipe.usercode import import_callback

# ---------------------------------------------------------------- validation


def merged_problems(merged: dict, origins: dict, sources: tuple[str, ...]) -> list[str]:
    """Every problem of a merged recipe mapping (`origins`: which source set each key), before it is built."""

    def where(path: tuple) -> str:
        while path and path not in origins:
            path = path[:-1]
        return origins.get(path, ", ".join(sources))

    errors: list[str] = []
    ok = _schema_problems(Recipe, merged, (), where, errors, skip=("name", "sources"))
    if "model" in merged:
        for key, message in config_problems(merged["model"]):
            path = ("model", key) if key else ("model",)
            label = ".".join(path)
            errors.append(f"{label} in {where(path)}: {message}")
    if isinstance(merged.get("training"), dict):
        errors += _training_problems(merged["training"], bool(merged.get("wandb")), where)
    if ok:
        errors += _value_problems(merged, where, source_dirs(sources))
    return errors


def _schema_problems(cls: type, data: Any, prefix: tuple, where, errors: list, skip=()) -> bool:
    """Unknown, missing and mistyped keys of one dataclass-shaped section; False when any were found."""
    label = ".".join(prefix)
    if not isinstance(data, dict):
        errors.append(f"{label} in {where(prefix)} is {data!r}; expected a mapping")
        return False
    before = len(errors)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in data:
        if key not in fields:
            path = ".".join((*prefix, str(key)))
            errors.append(
                f"unknown key '{path}' in {where((*prefix, key))}{did_you_mean(str(key), list(fields))}"
            )
    for name, f in fields.items():
        path = (*prefix, name)
        if name not in data:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required:
                errors.append(f"missing required key '{'.'.join(path)}' (in {where(prefix) or 'the recipe'})")
        elif dataclasses.is_dataclass(hints[name]):
            _schema_problems(hints[name], data[name], path, where, errors)
        elif name != "model":  # checked against its transformers config class by config_problems
            problem = type_problem(data[name], hints[name])
            if problem:
                errors.append(f"{'.'.join(path)} in {where(path)} {problem}")
    return len(errors) == before


def _training_problems(training: dict, wandb_set: bool, where) -> list[str]:
    """`training:` keys must be TrainingArguments fields of the right type and not ones delphi sets."""
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    allowed = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
    errors = []
    for key, value in training.items():
        path = ("training", key)
        if key in DELPHI_CONTROLLED:
            errors.append(
                f"training.{key} in {where(path)} is set by delphi; use {DELPHI_CONTROLLED[key]} instead"
            )
        elif key not in allowed:
            errors.append(
                f"unknown key 'training.{key}' in {where(path)}: transformers.TrainingArguments has no "
                f"such field{did_you_mean(str(key), allowed)}"
            )
        elif problem := type_problem(value, hints[key]):
            errors.append(f"training.{key} in {where(path)} {problem}")
        elif problem := _length_problem(key, value, training):
            errors.append(f"training.{key} in {where(path)} is {value!r}: {problem}")
        elif (
            key == "report_to" and not wandb_set and "wandb" in ([value] if isinstance(value, str) else value)
        ):
            errors.append(
                f"training.report_to in {where(path)} names wandb; set the top-level key "
                "wandb: 'entity/project' instead"
            )
    return errors


def _length_problem(key: str, value: Any, training: dict) -> str | None:
    """A run's length must be a positive number of steps or epochs: Trainer reads `max_steps` 0 or -5
    as "use the epochs" while delphi's schedule would plan otherwise, so say it instead of guessing."""
    if key == "max_steps" and (value == 0 or value < -1):
        return "must be a positive number of optimizer steps, or -1 to train for num_train_epochs"
    by_steps = isinstance(training.get("max_steps"), int) and training["max_steps"] > 0
    if key == "num_train_epochs" and value <= 0 and not by_steps:
        return "must be positive, or training.max_steps set"
    return None


def _value_problems(recipe: dict, where, search_dirs: list[str]) -> list[str]:
    """Range and consistency checks, run once every key has the right type."""
    checks: list[tuple[tuple, bool, str]] = []
    data, seeds, ckpt = recipe["data"], recipe.get("seeds", {}), recipe.get("checkpoints", {})
    hub, resume = recipe.get("hub", {}), recipe.get("resume", "auto")
    batch, micro = recipe["batch_size"], recipe.get("micro_batch_size")
    checks += [
        (("seq_len",), recipe["seq_len"] >= MIN_SEQ_LEN, f"must be at least {MIN_SEQ_LEN}"),
        (("batch_size",), batch >= 1, "must be positive"),
        (("micro_batch_size",), micro is None or micro >= 1, "must be positive or null"),
        (
            ("micro_batch_size",),
            micro is None or micro < 1 or batch % micro == 0,
            f"must divide batch_size ({batch})",
        ),
        (("tokenizer",), bool(recipe["tokenizer"].strip()), "must name a directory or hub id"),
        (("data", "path"), bool(data["path"].strip()), "must name a directory or hub id"),
        (
            ("data", "validation_size"),
            data.get("validation_size") is None or data["validation_size"] >= 1,
            "must be positive, or null for the whole split",
        ),
        (("checkpoints", "every"), (ckpt.get("every") or 0) >= 0, "must be >= 0 (0 or null: none)"),
        (("checkpoints", "steps"), _passes(check_steps, ckpt.get("steps", [])), "must all be >= 1"),
        (
            ("checkpoints", "per_epoch"),
            ckpt.get("per_epoch") is None or ckpt["per_epoch"] >= 1,
            "must be positive or null",
        ),
        (
            ("resume",),
            bool(resume.strip()) and ("@" not in resume or os.path.exists(resume) or _is_hub_ref(resume)),
            "must be auto, never, a checkpoint path or a hub branch 'org/name@step400'",
        ),
        (("hub", "retries"), hub.get("retries", 0) >= 0, "must be >= 0"),
        (("hub", "retry_wait"), hub.get("retry_wait", 0) >= 0, "must be >= 0 (seconds)"),
        (
            ("hub", "repo"),
            not hub.get("repo") or re.fullmatch(r"[\w.-]+/[\w.-]+", hub["repo"]) is not None,
            "must look like 'org/name'",
        ),
        (
            ("wandb",),
            not recipe.get("wandb") or re.fullmatch(r"([^/\s]+/)?[^/\s]+", recipe["wandb"]) is not None,
            "must look like 'entity/project' or 'project'",
        ),
    ]
    evaluation = recipe.get("evaluation") or {}
    checks += [
        (
            ("evaluation", "limit"),
            evaluation.get("limit") is None or evaluation["limit"] >= 1,
            "must be a positive number of documents, or null for all",
        ),
        (
            ("evaluation", "num_fewshot"),
            evaluation.get("num_fewshot") is None or evaluation["num_fewshot"] >= 0,
            "must be 0 or more, or null for each task's own",
        ),
        (("evaluation", "batch_size"), evaluation.get("batch_size", 1) >= 1, "must be at least 1"),
    ]
    for key in ("init", "data"):
        seed = seeds.get(key, 0)
        checks.append((("seeds", key), 0 <= seed < 2**32, "must be in [0, 2**32)"))
    positions = (
        recipe["model"].get("max_position_embeddings") if isinstance(recipe.get("model"), dict) else None
    )
    if isinstance(positions, int):
        checks.append(
            (
                ("seq_len",),
                recipe["seq_len"] <= positions,
                f"exceeds model.max_position_embeddings ({positions})",
            )
        )
    errors = []
    for path, ok, message in checks:
        if not ok:
            value = recipe
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            errors.append(f"{'.'.join(path)} in {where(path)} is {value!r}: {message}")
    for i, spec in enumerate(recipe.get("callbacks", [])):
        try:
            import_callback(spec, search_dirs)
        except DelphiError as e:
            errors.append(f"callbacks[{i}] in {where(('callbacks',))}: {e}")
    return errors


def _passes(check, *args) -> bool:
    try:
        check(*args)
    except DelphiError:
        return False
    return True


def _is_hub_ref(value: str) -> bool:
    return parse_hub_ref(value) is not None


# `report_to` integrations whose package transformers needs installed (`wandb` is a dependency of delphi)
_REPORTING_PACKAGES = ("tensorboard", "mlflow", "comet_ml", "neptune", "clearml", "dvclive", "trackio")


def recipe_problems(
    recipe: Recipe, *, world_size: int | None = None, resumes: bool = False, reach_hub: bool = True
) -> list[str]:
    """Every problem of a loaded recipe that can be known without training, one line each.

    The one check that `delphi validate`, `delphi suite` (every run, before any starts) and `delphi
    train` (before the out_dir is touched) all make, so the three refuse the same recipes with the same
    lines. Loading (`load_recipe`) has already refused what the schema, the value ranges, the
    `TrainingArguments` keys and the checkpoint steps rule out; this adds what depends on the machine:
    the input paths (`reach_hub`: a hub id is also tried on the network, else only its form), the
    batch split over `world_size` processes (when known), an out_dir that can be created, a local
    `resume:` checkpoint (unless the run `resumes` from its own), the optimizer values and the
    reporting integrations `training.report_to` names.
    """

    def check_input(text: str, what: str, files_ok: bool = False) -> None:
        if reach_hub:
            check_local_or_hub(text, what=what, files_ok=files_ok)
        elif not (os.path.exists(os.path.expanduser(text)) or is_hub_id(text)):
            raise missing_path_error(text, what=what, files_ok=files_ok)

    checks = [
        lambda: check_input(recipe.tokenizer, "tokenizer"),
        lambda: check_input(recipe.data.path, "dataset", files_ok=True),
        lambda: check_output_dir(recipe.out_dir, what="out_dir"),
    ]
    if world_size is not None:
        checks.insert(2, lambda: recipe.batch_split(world_size))
    if not resumes and recipe.resume not in ("auto", "never") and parse_hub_ref(recipe.resume) is None:
        checks.append(lambda: check_resume_path(recipe.resume))
    problems = []
    for check in checks:
        try:
            check()
        except DelphiError as e:
            problems.append(str(e))
    problems += optimizer_value_problems(optimizer_values(recipe.training))
    problems += _reporting_problems(recipe.training.get("report_to"))
    problems += _evaluation_problems(tuple(recipe.evaluation.tasks))
    return problems


@functools.lru_cache(maxsize=16)
def _evaluation_problems(tasks: tuple[str, ...]) -> list[str]:
    """`evaluation.tasks` on this machine: lm-evaluation-harness installed, and each task known to it (the
    nearest names otherwise), before a run builds its model (once per set of names: a suite shares them)."""
    if not tasks:
        return []
    if importlib.util.find_spec("lm_eval") is None:
        return [
            'evaluation.tasks needs lm-evaluation-harness, which is not installed: pip install -e ".[eval]"'
        ]
    from delphi.evaluate.harness import check_task_names, task_manager

    try:
        check_task_names(task_manager(names=list(tasks)), list(tasks))
    except DelphiError as e:
        return [f"evaluation.tasks: {e}"]
    return []


def _reporting_problems(report_to: Any) -> list[str]:
    """An integration `training.report_to` names whose package is missing (transformers would fail later,
    when the Trainer is built)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    wanted = [name for name in names if name in _REPORTING_PACKAGES]
    if not wanted:
        return []
    from transformers.integrations import get_available_reporting_integrations

    available = get_available_reporting_integrations()
    return [
        f"training.report_to asks for {name}, which is not installed: pip install {name}"
        + (" (pip install 'delphi[tensorboard]')" if name == "tensorboard" else "")
        for name in wanted
        if name not in available
    ]


def refusal(name: str, problems: list[str]) -> str:
    """The text of a DelphiError for `problems` of recipe `name`: one problem is one line."""
    if len(problems) == 1:
        return problems[0]
    return f"recipe {name} has {len(problems)} problem(s):\n  " + "\n  ".join(problems)


def check_resume_path(text: str) -> Path:
    """A local `resume:` path as a complete checkpoint with optimizer state, or the DelphiError that
    says what it is not."""
    path = check_local(text, what="resume")
    if not (path.is_dir() and is_complete(path) and has_resume_state(path)):
        raise DelphiError(
            f"resume {text!r} is not a complete checkpoint with optimizer state "
            "(expected a step folder holding checkpoint.json and optimizer.pt)"
        )
    return path
