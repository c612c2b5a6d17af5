"""delphi's adapter to lm-evaluation-harness (`lm_eval`, the optional `eval` extra): tasks found once, by
name, in the harness' own registry plus delphi's built-in tasks (`delphi/evaluate/tasks/`, always on the
include path) and the user's `--include-path`; a model delphi loaded (or is training) scored through the
harness' public API (`HFLM(pretrained=model)`, `simple_evaluate`), so every number is the harness' own.

The `TaskManager` (which indexes thousands of YAML files) and each task object (which holds its dataset) are
built once per sweep and handed to every checkpoint's evaluation: the harness rebuilds a task's requests on
each call and keeps nothing of the previous model.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from delphi.errors import DelphiError

BUILTIN_TASKS = Path(__file__).resolve().parent / "tasks"
INSTALL_HINT = (
    'lm-evaluation-harness is not installed: pip install -e ".[eval]" (or pip install "lm-eval[hf]")'
)


def require_lm_eval() -> str:
    """The installed lm_eval version, or a DelphiError that names the extra to install."""
    try:
        from importlib.metadata import version

        import lm_eval  # noqa: F401
    except ImportError as e:
        raise DelphiError(INSTALL_HINT) from e
    return version("lm_eval")


@dataclass
class Tasks:
    """Tasks loaded once: `objects[name]` is what `simple_evaluate(tasks=[...])` takes (a Task or Group)."""

    manager: object
    names: list[str]
    objects: dict[str, object] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    fewshot: dict[str, int | None] = field(default_factory=dict)  # the count used (None: tasks differ)


def _include_paths(include_path) -> list[str]:
    extra = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path or [])
    for path in extra:
        if not Path(path).is_dir():
            raise DelphiError(f"--include-path {str(path)!r} is not a directory of task YAML files")
    return [str(BUILTIN_TASKS), *map(str, extra)]


def task_manager(include_path=None, metadata: dict | None = None, names: list[str] | None = None):
    """The harness' TaskManager over its own tasks, delphi's built-in tasks and `include_path`; where
    `names` are all delphi's or the include path's, without the harness' own (its index of thousands of
    YAML files takes seconds)."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    quiet_harness()
    paths = _include_paths(include_path)
    if names:
        local = TaskManager(include_path=paths, include_defaults=False, metadata=metadata or None)
        if all(n.strip() in local.all_tasks for n in names if n.strip()):
            return local
    return TaskManager(include_path=paths, metadata=metadata or None)


def check_task_names(manager, names: list[str]) -> list[str]:
    """`names` (distinct, in order), or a DelphiError naming the first unknown one and the nearest known."""
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise DelphiError("--tasks names no task; e.g. --tasks delphi_bpb,delphi_minimal_pairs")
    known = manager.all_tasks
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(near)}?" if near else "see `lm_eval ls tasks`"
            raise DelphiError(f"unknown task {name!r}: {hint}")
    return names


def _canonical(value) -> object:
    """A task config as JSON can hold it; functions by their import name (their repr holds an address)."""
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return str(value)


def config_hash(obj) -> str:
    """A short hash of a task's (or a group's and all its tasks') configuration as the harness holds it, and
    of the documents it evaluates."""
    tasks = _leaves(obj)
    configs = [t.dump_config() for t in tasks]
    if hasattr(obj, "to_dict"):
        configs.append(obj.to_dict())
    for config in configs:
        if isinstance(config, dict) and isinstance(config.get("metadata"), dict):
            # where the YAML file lies is not what it computes: a moved checkout keeps its cells
            config["metadata"] = {k: v for k, v in config["metadata"].items() if k != "config_source"}
    digest = hashlib.sha256(json.dumps(configs, sort_keys=True, default=_canonical).encode())
    for task in tasks:  # the documents too: a task whose data is made by code (custom_dataset) may change
        for doc in task.eval_docs:
            digest.update(json.dumps(doc, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def load_tasks(manager, names: list[str], num_fewshot: int | None = None) -> Tasks:
    """Build each task once (its dataset read now), with the few-shot count set as simple_evaluate sets it,
    so the hash records the configuration the numbers are computed with."""
    tasks = Tasks(manager=manager, names=names)
    for name in names:
        loaded = manager.load([name])
        obj = loaded["groups"].get(name) or loaded["tasks"].get(name)
        if obj is None:  # a tag: its tasks, evaluated together
            obj = list(loaded["tasks"].values())
        for task in _leaves(obj):
            if num_fewshot is not None and task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=num_fewshot)
            elif task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
        tasks.objects[name] = obj
        members = obj if isinstance(obj, list) else [obj]
        combined = "".join(config_hash(m) for m in members)
        tasks.hashes[name] = (
            combined if len(members) == 1 else hashlib.sha256(combined.encode()).hexdigest()[:16]
        )
        tasks.versions[name] = ",".join(_task_version(m) for m in members)
        counts = {task.get_config("num_fewshot") for task in _leaves(obj)}
        tasks.fewshot[name] = counts.pop() if len(counts) == 1 else None
    return tasks


def _leaves(obj) -> list:
    if isinstance(obj, list):
        return obj
    return obj.get_all_tasks() if hasattr(obj, "get_all_tasks") else [obj]


def _task_version(obj) -> str:
    version = getattr(obj, "version", None)
    if version is None and hasattr(obj, "get_config"):
        version = (obj.get_config("metadata") or {}).get("version")
    return str(version)


def quiet_harness() -> None:
    """The harness' per-call INFO lines (seeds, task lists, request counts) down to warnings."""
    import logging

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    tasks = logging.getLogger("lm_eval.api.task")
    if not any(isinstance(f, _KwargsHint) for f in tasks.filters):
        tasks.addFilter(_KwargsHint())


class _KwargsHint:
    """Drops the harness' hint, at every load of a task with a custom dataset, on how to pass --metadata."""

    def filter(self, record) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


def harness_model(model, tokenizer, *, batch_size: int = 1, add_bos_token: bool | None = None):
    """The harness' HF model around a model already in memory (delphi's, on its device)."""
    from lm_eval.models.huggingface import HFLM

    kwargs = {} if add_bos_token is None else {"add_bos_token": add_bos_token}
    # the harness warns that a model object skips its loading options: that is the point here
    quiet_harness()
    return HFLM(
        pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device), **kwargs
    )


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(float(value)) else None
    return None


def evaluate(
    lm, tasks: Tasks, name: str, *, limit: int | None = None, num_fewshot: int | None = None
) -> dict:
    """One task (or group) on one model: `{"rows": [{task, metric, value, stderr, samples}], ...}` with every
    metric the harness reports for it and its subtasks, and the task's version and config hash."""
    import lm_eval

    obj = tasks.objects[name]
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=obj if isinstance(obj, list) else [obj],
        task_manager=tasks.manager,
        limit=limit,
        num_fewshot=num_fewshot,
        log_samples=False,
    )
    rows = []
    samples = {task: info.get("effective") for task, info in (results.get("n-samples") or {}).items()}
    metric_names = results.get("higher_is_better") or {}
    for task, metrics in results["results"].items():
        # the task's metrics in its metric_list's order (the first is its main one); not `alias`, `sample_len`
        for metric in metric_names.get(task) or {}:
            for key, value in metrics.items():
                key_metric, _, filter_name = key.partition(",")
                if key_metric != metric or _number(value) is None:
                    continue
                rows.append(
                    {
                        "task": task,
                        "metric": metric if filter_name in ("", "none") else f"{metric},{filter_name}",
                        "value": float(value),
                        "stderr": _number(metrics.get(f"{metric}_stderr,{filter_name}")),
                        "samples": samples.get(task),
                    }
                )
    for row in rows:  # a group's own rows: the documents of its tasks
        if row["samples"] is None and row["task"] == name:
            row["samples"] = sum(n for task, n in samples.items() if task != name and n is not None) or None
    rows.sort(
        key=lambda row: row["task"] != name
    )  # the task asked for first (a group's own before its tasks')
    return {
        "rows": rows,
        "task_version": tasks.versions[name],
        "config_hash": tasks.hashes[name],
    }
