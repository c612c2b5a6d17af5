"""YAML training recipes: inheritance, `--set` overrides, strict validation, -> TrainingArguments.

A recipe is everything that decides a run (model, data, batch, seeds, checkpoints, optimizer), so the
same recipe trains the same model on 1 CPU or 8 GPUs. Files inherit through `base:` (a path or list of
paths relative to the file; bases first, the file last, later values win, mappings merge key by key,
lists replace). An optional top-level `name:` names the run; by default it is the stem of the last
file given. Every problem is reported at once, naming the file that set the bad key, before any data,
tokenizer or weights are touched.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import importlib
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from delphi.data.sequences import MIN_SEQ_LEN
from delphi.errors import DelphiError
from delphi.mamba.choices import SCAN_PATHS
from delphi.models import config_problems, did_you_mean
from delphi.train.checkpoints import KEEP_OPTIMIZER
from delphi.train.decay import WEIGHT_DECAY_PARAMS
from delphi.train.sampler import DATA_ORDERS
from delphi.train.schedule import check_steps

# Recipe keys that change how a run is executed or reported, not what it computes: a run may resume
# with them changed (see Recipe.identity). `micro_batch_size`, `mamba_scan` and the process layout
# change floating-point reduction order only.
EXECUTION_KEYS = frozenset(
    {
        "name",
        "resume",
        "hub",
        "wandb",
        "callbacks",
        "micro_batch_size",
        "out_dir",
        "mamba_scan",
        "fused_loss",
        "checkpoints",
    }
)
EXECUTION_TRAINING_KEYS = frozenset(
    {
        "logging_steps", "logging_first_step", "logging_strategy", "logging_nan_inf_filter", "log_level",
        "log_level_replica", "log_on_each_node", "report_to", "run_name", "disable_tqdm", "project",
        "trackio_space_id", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
        "dataloader_prefetch_factor", "dataloader_multiprocessing_context", "dataloader_in_order",
        "torch_compile", "torch_compile_backend", "torch_compile_mode", "ddp_timeout",
        "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_backend",
        "fsdp", "fsdp_config", "deepspeed", "accelerator_config", "use_cpu", "gradient_checkpointing",
        "gradient_checkpointing_kwargs", "skip_memory_metrics", "include_num_input_tokens_seen",
        "include_tokens_per_second",
    }
)  # fmt: skip


@dataclass(frozen=True)
class DataSection:
    """The tokenized dataset (local dir or hub id) and which of its splits and column to use."""

    path: str
    feature: str = "tokens"
    train_split: str = "train"
    validation_split: str = "validation"
    validation_size: int | None = None  # None = whole split; N = its first N sequences, the same every time
    order: Literal[DATA_ORDERS] = "hash"  # hash: delphi's; delphi-v0.2: the released suite's (sampler.py)


@dataclass(frozen=True)
class Seeds:
    init: int = 42  # model initialization
    data: int = 1337  # data order (with the epoch, the only input to it)


@dataclass(frozen=True)
class CheckpointSchedule:
    every: int | None = None  # steps between regular checkpoints; None or 0 = none
    steps: list[int] = field(default_factory=list)  # extra steps, e.g. a dense early log-spaced list
    per_epoch: int | None = None  # k evenly spaced checkpoints per epoch
    keep_optimizer: Literal[KEEP_OPTIMIZER] = "latest"


@dataclass(frozen=True)
class HubSection:
    repo: str | None = None  # "org/name": each checkpoint to branch step{N}, the final model to main
    private: bool = False
    push_optimizer: bool = False  # also upload optimizer/scheduler/RNG state (needed to resume from the hub)
    offline_ok: bool = False  # hub unreachable at start: train offline (publish later with `delphi push`)
    retries: int = 3  # retries of a failed upload, waits doubling from retry_wait seconds
    retry_wait: float = 10.0


@dataclass(frozen=True)
class Recipe:
    """A fully merged, validated recipe. `to_dict()` is what gets saved with every checkpoint."""

    name: str
    model: dict[str, Any]  # `architecture` (a transformers *ForCausalLM class) + its config's keys
    tokenizer: str  # local dir or hub id
    data: DataSection
    seq_len: int
    batch_size: int  # global: sequences per optimizer step, whatever the hardware
    micro_batch_size: int | None = None  # per-device sequences per forward; None = no accumulation
    # Mamba's selective scan implementation (delphi.mamba); same weights and results, different speed
    mamba_scan: Literal[SCAN_PATHS] = "auto"
    # the loss without the whole batch's logits in memory (delphi.train.loss); same loss and gradients
    fused_loss: bool = True
    seeds: Seeds = field(default_factory=Seeds)
    checkpoints: CheckpointSchedule = field(default_factory=CheckpointSchedule)
    out_dir: str = "out/{name}"
    resume: str = "auto"  # auto | never | path to a checkpoint | hub branch "org/name@step400"
    hub: HubSection = field(default_factory=HubSection)
    wandb: str | None = None  # "entity/project" or "project"; None = no W&B
    callbacks: list[str] = field(default_factory=list)  # "pkg.mod:Class" TrainerCallback subclasses
    # which parameters get training.weight_decay: transformers' groups (no norm weights, no biases), or
    # every parameter, as the original delphi suite did (it handed model.parameters() to AdamW)
    weight_decay_params: Literal[WEIGHT_DECAY_PARAMS] = "transformers"
    training: dict[str, Any] = field(default_factory=dict)  # passed to TrainingArguments as is
    sources: tuple[str, ...] = field(default=(), compare=False)  # the files it came from, in merge order

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def wandb_entity_project(self) -> tuple[str | None, str] | None:
        """(entity or None, project) from the `wandb` key, or None when W&B is off."""
        if not self.wandb:
            return None
        entity, _, project = self.wandb.rpartition("/")
        return entity or None, project

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-serializable and fully resolved: loading it back gives an equal recipe."""
        out = dataclasses.asdict(self)
        del out["sources"]
        return out

    def dump_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def identity(self) -> dict[str, Any]:
        """The parts of the recipe that decide what is computed: two runs are the same run iff these agree.

        Left out: `EXECUTION_KEYS` and `EXECUTION_TRAINING_KEYS` (how the run is executed, logged,
        checkpointed, published), so a run can resume on other hardware, with other logging or a denser
        checkpoint schedule. Everything else (model, tokenizer, data, seq_len, batch, seeds, optimizer
        and precision settings) is the run.
        """
        return Recipe.identity_of(self.to_dict())

    @staticmethod
    def identity_of(recipe_dict: dict[str, Any]) -> dict[str, Any]:
        """`identity()` of a saved recipe (a `to_dict()` read back from recipe.yaml). Keys the recipe was
        saved without (added to delphi later) take their defaults, which is what that run used."""
        full = _with_defaults(Recipe, recipe_dict)
        ident = {k: v for k, v in full.items() if k not in EXECUTION_KEYS}
        training = full.get("training") or {}
        ident["training"] = {k: v for k, v in training.items() if k not in EXECUTION_TRAINING_KEYS}
        return ident

    def batch_split(self, world_size: int) -> tuple[int, int]:
        """(per-device micro batch, gradient accumulation steps) for `world_size` processes."""
        return split_batch(self.batch_size, self.micro_batch_size, world_size)

    def callback_classes(self) -> list[type]:
        return [import_callback(spec, self.search_dirs) for spec in self.callbacks]

    @property
    def search_dirs(self) -> list[str]:
        return callback_search_dirs(self.sources)

    def training_arguments(self, world_size: int, **extra: Any):
        """`transformers.TrainingArguments` for this recipe on `world_size` processes.

        The `training:` section is passed through; delphi sets the keys of `DELPHI_CONTROLLED` from the
        rest of the recipe (batch layout, seeds, output dir, reporting, save/eval strategy, CPU); `extra`
        wins over both. Built once per run: creating it also sets up the process group.
        """
        from transformers import TrainingArguments

        kwargs = dict(self.training)
        report_to = kwargs.pop("report_to", "none")
        if self.wandb:
            others = [report_to] if isinstance(report_to, str) else list(report_to or [])
            report_to = [r for r in others if r not in ("none", "wandb")] + ["wandb"]
        kwargs.setdefault("run_name", self.name)
        # delphi's models have no unused parameters; DDP's search for them costs a graph walk per step
        kwargs.setdefault("ddp_find_unused_parameters", False)
        kwargs.update(self.delphi_settings(world_size), report_to=report_to)
        kwargs.update(extra)
        _drop_tf32_without_cuda(kwargs, self.name)
        try:
            return TrainingArguments(**kwargs)
        except (ValueError, TypeError) as e:
            raise DelphiError(f"recipe {self.name}: transformers.TrainingArguments rejected it: {e}") from e

    def delphi_settings(self, world_size: int) -> dict[str, Any]:
        """The TrainingArguments values delphi derives (each key is one of `DELPHI_CONTROLLED`)."""
        import torch

        micro, accumulation = self.batch_split(world_size)
        settings = dict(
            output_dir=self.out_dir,
            per_device_train_batch_size=micro,
            per_device_eval_batch_size=micro,
            gradient_accumulation_steps=accumulation,
            seed=self.seeds.init,
            data_seed=self.seeds.data,
            save_strategy="no",  # DelphiTrainer saves and evaluates at the checkpoint schedule
            eval_strategy="no",
            save_only_model=self.checkpoints.keep_optimizer == "none",
            save_on_each_node=False,
        )
        assert set(settings) <= set(DELPHI_CONTROLLED), set(settings) - set(DELPHI_CONTROLLED)
        if not torch.cuda.is_available():
            settings["use_cpu"] = True  # also makes accelerate pick gloo DDP under torchrun
        return settings


def _drop_tf32_without_cuda(kwargs: dict[str, Any], name: str) -> None:
    """`tf32: true` where TF32 does not exist (a CPU, a pre-Ampere GPU) is dropped, not an error.

    TF32 is a CUDA matmul mode; the original delphi suite turned it on unconditionally, a no-op off Ampere,
    so a recipe that asks for it (e.g. recipes/stories/base-delphi-v0.2.yaml) trains the same everywhere
    else. TrainingArguments would raise instead.
    """
    import torch

    if kwargs.get("tf32") and not (
        torch.cuda.is_available()
        and torch.version.cuda is not None
        and not kwargs.get("use_cpu")
        and torch.cuda.get_device_capability()[0] >= 8
    ):
        logging.getLogger("delphi.recipe").info(
            "recipe %s: training.tf32 ignored: TF32 matmuls exist only on CUDA GPUs of compute capability 8+ "
            "(Ampere and newer), and this run has none",
            name,
        )
        del kwargs["tf32"]


def _with_defaults(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with every field of dataclass `cls` it lacks set to the field's default (sections too)."""
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for f in dataclasses.fields(cls):
        if f.name in ("name", "sources"):
            continue
        if f.name not in out:
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
                out[f.name] = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default
        elif dataclasses.is_dataclass(hints[f.name]) and isinstance(out[f.name], dict):
            out[f.name] = _with_defaults(hints[f.name], out[f.name])
    return out


def split_batch(batch_size: int, micro_batch_size: int | None, world_size: int) -> tuple[int, int]:
    """(per-device micro batch, accumulation steps) so that micro * accumulation * world = batch_size.

    The global batch is fixed by the recipe; only how it is cut up depends on the hardware.
    """
    if world_size < 1 or batch_size % world_size:
        raise DelphiError(
            f"batch_size {batch_size} cannot be split evenly over world size {world_size}"
            f" (micro_batch_size {micro_batch_size}); choose a batch_size divisible by {world_size}"
        )
    share = batch_size // world_size
    micro = micro_batch_size or share
    if share % micro:
        raise DelphiError(
            f"batch_size {batch_size} over world size {world_size} gives {share} sequences per device, "
            f"which micro_batch_size {micro} does not divide; choose a micro_batch_size that divides {share}"
        )
    return micro, share // micro


def import_callback(spec: str, search_dirs: list[str] | tuple[str, ...] = ()) -> type:
    """The `transformers.TrainerCallback` subclass named by "pkg.module:ClassName".

    The module is imported from sys.path, else from `search_dirs` (which are then added to sys.path, so
    the same recipe works under `delphi train`, whose sys.path lacks the current directory).
    """
    from transformers import TrainerCallback

    module_name, _, class_name = spec.partition(":")
    if not re.fullmatch(r"[\w.]+", module_name) or not re.fullmatch(r"\w+", class_name):
        raise DelphiError(f"callback {spec!r} must look like 'package.module:ClassName'")
    try:
        module = _import_from(module_name, search_dirs)
    except ModuleNotFoundError as e:
        where = ", ".join(list(search_dirs) + ["the Python path"])
        raise DelphiError(
            f"callback {spec!r} cannot be imported: no module named {e.name!r} (looked in {where})"
        ) from e
    except ImportError as e:
        raise DelphiError(f"callback {spec!r} cannot be imported: {e}") from e
    try:
        cls = getattr(module, class_name)
    except AttributeError as e:
        raise DelphiError(f"callback {spec!r}: module {module_name!r} has no {class_name!r}") from e
    if not (isinstance(cls, type) and issubclass(cls, TrainerCallback)):
        raise DelphiError(f"callback {spec!r} is not a transformers.TrainerCallback subclass")
    return cls


def callback_search_dirs(sources: tuple[str, ...] | list[str]) -> list[str]:
    """Where a callback's module is looked for besides sys.path: the current directory, then the
    directories of the recipe files (so `delphi`, `python -m` and `accelerate launch` agree)."""
    files = [os.path.dirname(os.path.abspath(s)) for s in sources if not s.startswith("--set ")]
    return list(dict.fromkeys([os.getcwd(), *files]))


def _import_from(module_name: str, search_dirs) -> types.ModuleType:
    import sys

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        top = module_name.split(".")[0]
        if e.name not in (top, module_name):
            raise  # the module was found but one of its own imports is missing
        extra = [d for d in search_dirs if d not in sys.path]
        if not extra:
            raise
        sys.path[1:1] = extra
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


# ---------------------------------------------------------------- loading and merging


class _Loader(yaml.SafeLoader):
    """safe_load, but `5e-4` is a float as in YAML 1.2 (PyYAML's YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise DelphiError(f"{source} is not valid YAML: {e}") from e


def _file_layers(path: Path, chain: tuple[Path, ...]) -> list[tuple[str, dict]]:
    """(source, mapping) layers in merge order: the file's bases (recursively), then the file itself."""
    label = os.path.normpath(path)
    if path.resolve() in chain:
        cycle = " -> ".join(os.path.relpath(p) for p in (*chain, path.resolve()))
        raise DelphiError(f"recipe bases form a cycle: {cycle}")
    if not path.is_file():
        named_by = f" (the base named in {os.path.normpath(chain[-1])})" if chain else ""
        raise DelphiError(f"recipe file {label} does not exist{named_by}")
    data = parse_yaml(path.read_text(), label)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DelphiError(f"{label} must hold a mapping of recipe keys, not {type(data).__name__}")
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise DelphiError(f"'base' in {label} must be a file name or a list of them, got {bases!r}")
    layers = []
    for base in bases:
        layers += _file_layers(path.parent / base, (*chain, path.resolve()))
    return [*layers, (label, data)]


def _override_layer(override: str) -> dict:
    """ "training.learning_rate=1e-3" -> {"training": {"learning_rate": 0.001}} (value read as YAML)."""
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise DelphiError(f"override {override!r} must look like KEY=VALUE, e.g. training.learning_rate=1e-3")
    layer: Any = parse_yaml(value, f"override {override!r}")
    for part in reversed(parts):
        layer = {part: layer}
    return layer


def _merge(into: dict, layer: dict, source: str, origins: dict, prefix: tuple = ()) -> None:
    """Merge `layer` into `into` in place; record in `origins` which source set each key path last."""
    for key, value in layer.items():
        path = (*prefix, key)
        if not (isinstance(value, dict) and isinstance(into.get(key), dict)):
            into[key] = {} if isinstance(value, dict) else copy.deepcopy(value)
            for replaced in [p for p in origins if p[: len(path)] == path]:
                del origins[replaced]
        origins[path] = source
        if isinstance(value, dict):
            _merge(into[key], value, source, origins, path)


def load_recipe(paths: list[str | Path] | str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load, merge (in order), override and validate recipe files; DelphiError lists every problem."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DelphiError("no recipe file given")
    layers = [layer for p in paths for layer in _file_layers(Path(p), ())]
    layers += [(f"--set {o}", _override_layer(o)) for o in overrides]
    merged: dict = {}
    origins: dict = {}
    for source, layer in layers:
        _merge(merged, layer, source, origins)
    sources = tuple(dict.fromkeys(source for source, _ in layers))
    name = merged.pop("name", None) or Path(paths[-1]).stem
    errors = _problems(merged, origins, sources)
    if not isinstance(name, str):
        errors.insert(0, f"name in {origins[('name',)]} is {name!r}; expected str")
    if errors:
        raise DelphiError(f"recipe {name} has {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    return _build(Recipe, merged, name=name, sources=sources)


def _build(cls: type, data: dict, **fixed: Any):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = (
                _build(hints[f.name], value) if dataclasses.is_dataclass(hints[f.name]) else value
            )
    kwargs.update(fixed)
    if cls is Recipe:
        kwargs["out_dir"] = kwargs.get("out_dir", Recipe.out_dir).replace("{name}", fixed["name"])
    return cls(**kwargs)


# ---------------------------------------------------------------- validation

# TrainingArguments fields that delphi derives itself, and the recipe key that decides each one.
DELPHI_CONTROLLED = {
    "per_device_train_batch_size": "batch_size / micro_batch_size",
    "per_device_eval_batch_size": "micro_batch_size",
    "gradient_accumulation_steps": "batch_size / micro_batch_size",
    "auto_find_batch_size": "batch_size / micro_batch_size",
    "seed": "seeds.init",
    "data_seed": "seeds.data",
    "train_sampling_strategy": "seeds.data (delphi's sampler fixes the data order)",
    "output_dir": "out_dir",
    "save_steps": "checkpoints",
    "save_strategy": "checkpoints",
    "save_total_limit": "checkpoints.keep_optimizer",
    "save_only_model": "checkpoints.keep_optimizer",
    "eval_steps": "checkpoints",
    "eval_strategy": "checkpoints",
    "resume_from_checkpoint": "resume",
    "push_to_hub": "hub",
    "hub_model_id": "hub.repo",
    "hub_private_repo": "hub.private",
    "hub_strategy": "hub",
    "hub_token": "hub (log in with `hf auth login`)",
    "hub_always_push": "hub",
    "hub_revision": "hub",
    "save_on_each_node": "a shared out_dir (only process 0 writes checkpoints; every machine must see them)",
}


def _problems(merged: dict, origins: dict, sources: tuple[str, ...]) -> list[str]:
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
        errors += _value_problems(merged, where, callback_search_dirs(sources))
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
    from delphi.hub.client import parse_hub_ref

    return parse_hub_ref(value) is not None


# ---------------------------------------------------------------- type checking against annotations


def type_problem(value: Any, annotation: Any) -> str:
    """'' when `value` (as read from YAML) fits `annotation`, else "is X; expected Y" for an error message."""
    if _fits(value, annotation):
        return ""
    enums = [a for a in _members(annotation) if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums and isinstance(value, str):
        choices = [m.value for e in enums for m in e]
        return f"is {value!r}; expected one of {choices}{did_you_mean(value, choices)}"
    return f"is {value!r}; expected {_describe(annotation)}"


def _members(annotation: Any) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _fits(value: Any, annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):  # `Enum | str` fields still need a valid enum value
            return any(_fits(value, e) for e in enums)
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin in (list, tuple):
        return isinstance(value, list) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, annotation) or value in {m.value for m in annotation}
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # a typing construct we do not model: leave it to the library that reads it


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is None or annotation is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))
