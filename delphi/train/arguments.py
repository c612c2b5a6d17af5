"""`transformers.TrainingArguments` from a recipe: how a run executes, on this machine.

The `training:` section is passed through as it is; delphi derives the keys of `DELPHI_CONTROLLED` from
the rest of the recipe (batch layout over the processes, seeds, output dir, reporting, save and eval
strategy) and from the hardware (CPU or CUDA, TF32). Creating it also sets up the process group.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import TrainingArguments

from delphi.errors import DelphiError
from delphi.recipe import DELPHI_CONTROLLED, Recipe


def training_arguments(recipe: Recipe, world_size: int, **extra: Any):
    """`transformers.TrainingArguments` for this recipe on `world_size` processes.

    The `training:` section is passed through; delphi sets the keys of `DELPHI_CONTROLLED` from the
    rest of the recipe (batch layout, seeds, output dir, reporting, save/eval strategy, CPU); `extra`
    wins over both. Built once per run: creating it also sets up the process group.
    """
    kwargs = dict(recipe.training)
    report_to = kwargs.pop("report_to", "none")
    if recipe.wandb:
        others = [report_to] if isinstance(report_to, str) else list(report_to or [])
        report_to = [r for r in others if r not in ("none", "wandb")] + ["wandb"]
    kwargs.setdefault("run_name", recipe.name)
    # delphi's models have no unused parameters; DDP's search for them costs a graph walk per step
    kwargs.setdefault("ddp_find_unused_parameters", False)
    kwargs.update(delphi_settings(recipe, world_size), report_to=report_to)
    kwargs.update(extra)
    _drop_tf32_without_cuda(kwargs, recipe.name)
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as e:
        raise DelphiError(f"recipe {recipe.name}: transformers.TrainingArguments rejected it: {e}") from e


def delphi_settings(recipe: Recipe, world_size: int) -> dict[str, Any]:
    """The TrainingArguments values delphi derives (each key is one of `DELPHI_CONTROLLED`)."""
    micro, accumulation = recipe.batch_split(world_size)
    settings = dict(
        output_dir=recipe.out_dir,
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        seed=recipe.seeds.init,
        data_seed=recipe.seeds.data,
        save_strategy="no",  # DelphiTrainer saves and evaluates at the checkpoint schedule
        eval_strategy="no",
        save_only_model=recipe.checkpoints.keep_optimizer == "none",
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
    if kwargs.get("tf32") and not (
        torch.cuda.is_available()
        and torch.version.cuda is not None
        and not kwargs.get("use_cpu")
        and torch.cuda.get_device_capability()[0] >= 8
    ):
        logging.getLogger("delphi.train").info(
            "recipe %s: training.tf32 ignored: TF32 matmuls exist only on CUDA GPUs of compute capability 8+ "
            "(Ampere and newer), and this run has none",
            name,
        )
        del kwargs["tf32"]
