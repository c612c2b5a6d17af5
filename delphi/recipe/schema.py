"""What a recipe is: its sections as dataclasses, and every choice a recipe key can take.

A recipe is everything that decides a run (model, data, batch, seeds, checkpoints, optimizer), so the
same recipe trains the same model on 1 CPU or 8 GPUs. The choices of its keys (data orders, which
checkpoints keep optimizer state, which parameters get weight decay, Mamba's scan paths) are defined
here, the vocabulary of the recipe, and read by the parts of delphi that act on them (delphi.train,
delphi.mamba). Loading is delphi.recipe.loading, checking delphi.recipe.problems.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from delphi.errors import DelphiError

# data orders (recipe `data.order`): delphi's own hash order, or the released suite's (delphi.train.sampler)
DATA_ORDERS = ("hash", "delphi-v0.2")
# where resume state is kept (`checkpoints.keep_optimizer`): newest checkpoint, every one, none
KEEP_OPTIMIZER = ("latest", "all", "none")
# which parameters get training.weight_decay (`weight_decay_params`): transformers' groups (no norm
# weights, no biases), or every parameter, as the original delphi suite did
WEIGHT_DECAY_PARAMS = ("transformers", "all")
# Mamba's selective scan implementations (`mamba_scan`, delphi.mamba): same weights, different speed
SCAN_PATHS = ("auto", "cuda-kernels", "triton", "chunked", "mambapy", "reference")
# the shortest `seq_len`: <bos>, the previous sequence's last token repeated, and one new token
# (delphi.data.sequences cuts sequences by that rule)
MIN_SEQ_LEN = 3

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
        "evaluation",
        "ledger",
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
class EvaluationSection:
    """lm-evaluation-harness tasks run at every checkpoint on the model in memory (delphi.train.in_loop_eval);
    limit, num_fewshot and batch_size mean what they mean to lm_eval. Not part of the run's identity."""

    tasks: list[str] = field(default_factory=list)  # e.g. [delphi_bpb, delphi_minimal_pairs]; [] = none
    limit: int | None = None  # the first N documents of each task
    num_fewshot: int | None = None
    batch_size: int = 16


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
    # keep each trained sequence's loss at each step in out_dir/ledger/ (delphi.train.ledger); an execution
    # key: the weights are the same with it on or off, so a run may resume with it switched
    ledger: bool = False
    seeds: Seeds = field(default_factory=Seeds)
    checkpoints: CheckpointSchedule = field(default_factory=CheckpointSchedule)
    out_dir: str = "out/{name}"
    resume: str = "auto"  # auto | never | path to a checkpoint | hub branch "org/name@step400"
    hub: HubSection = field(default_factory=HubSection)
    wandb: str | None = None  # "entity/project" or "project"; None = no W&B
    callbacks: list[str] = field(default_factory=list)  # "pkg.mod:Class" TrainerCallback subclasses
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
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

    @property
    def search_dirs(self) -> list[str]:
        """Where the modules of its callbacks are looked for besides sys.path: the current directory, then
        the directories of the recipe files (so `delphi`, `python -m` and `accelerate launch` agree)."""
        return source_dirs(self.sources)


def identity_changes(a: dict, b: dict, prefix: str = "") -> list[str]:
    """How run identity `b` differs from `a` (`Recipe.identity`), one `key: old -> new` per difference; []
    for the same run. How an out_dir (delphi.train.outdir) and a hub repo (delphi.hub.repo_run) tell the
    run they hold from another."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += identity_changes(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


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


def check_steps(steps: Iterable[int], name: str = "checkpoint steps") -> list[int]:
    """Sorted unique steps, each a positive integer; the one check every step list goes through."""
    steps = list(steps)
    for step in steps:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise DelphiError(f"{name} must be positive integers, got {steps!r}")
    return sorted(set(steps))


def source_dirs(sources: tuple[str, ...] | list[str]) -> list[str]:
    """The current directory, then the directories of the recipe files among `sources` (a user's modules
    are looked for there, so `delphi`, `python -m` and `accelerate launch` agree)."""
    files = [os.path.dirname(os.path.abspath(s)) for s in sources if not s.startswith("--set ")]
    return list(dict.fromkeys([os.getcwd(), *files]))
