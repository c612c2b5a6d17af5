"""Train one recipe: check everything cheap first, then build the model and hand over to DelphiTrainer.

The order matters: recipe, output dir, tokenizer and data are all checked (seconds) before the
model is built and the first step runs, so a bad input never costs a training run and never
touches what an earlier run saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback

from delphi.errors import DelphiError
from delphi.recipe import Recipe
from delphi.run_status import hold_run_lock
from delphi.train.checkpoints import checkpoint_dir, is_complete

log = logging.getLogger("delphi.train")

RECIPE_FILE = "recipe.yaml"
# training: keys that change logging or speed, not what is computed; a run may resume with them changed
_COSMETIC_TRAINING_KEYS = {
    "logging_steps",
    "logging_first_step",
    "logging_strategy",
    "report_to",
    "run_name",
    "disable_tqdm",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "torch_compile",
    "torch_compile_backend",
    "torch_compile_mode",
}
_COSMETIC_KEYS = {
    "resume",
    "hub",
    "wandb",
    "callbacks",
    "micro_batch_size",
    "out_dir",
    "mamba_scan",
    "checkpoints",
}


def world_size() -> int:
    """Processes in this run, from the launcher's environment (torchrun / accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _run_identity(recipe_dict: dict) -> dict:
    """The parts of a recipe that decide the weights: two runs differ iff these differ."""
    ident = {k: v for k, v in recipe_dict.items() if k not in _COSMETIC_KEYS and k != "name"}
    ident["training"] = {
        k: v for k, v in (recipe_dict.get("training") or {}).items() if k not in _COSMETIC_TRAINING_KEYS
    }
    return ident


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def prepare_out_dir(recipe: Recipe, *, overwrite: bool) -> tuple[Path | None, list[Path]]:
    """Decide what to do with `out_dir`: (the checkpoint to resume from or None, what to delete first).

    Refuses (before any work) an out_dir holding a different run, or checkpoints with
    `resume: never`, unless `overwrite`. Nothing is deleted here: with `overwrite`, the old run's
    files are returned, and `train` removes them only once every other check has passed.
    """
    import yaml

    from delphi.train.checkpoints import latest_resumable, list_checkpoints

    out_dir = Path(recipe.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DelphiError(f"out_dir {str(out_dir)!r} exists and is not a directory")
    existing = list_checkpoints(out_dir)
    saved_recipe = out_dir / RECIPE_FILE
    if overwrite and out_dir.exists():
        old_run = [folder for _, folder in existing] + sorted(out_dir.glob(".step*")) + [saved_recipe]
        return _explicit_resume(recipe), [p for p in old_run if p.exists()]
    if existing or saved_recipe.exists():
        if saved_recipe.exists():
            before = yaml.safe_load(saved_recipe.read_text())
            changes = _diff(_run_identity(before), _run_identity(recipe.to_dict()))
            if changes:
                raise DelphiError(
                    f"out_dir {str(out_dir)!r} holds a different run ({len(changes)} difference(s): "
                    + "; ".join(changes[:5])
                    + "); choose another out_dir, or pass --overwrite to replace it"
                )
        elif existing:
            raise DelphiError(
                f"out_dir {str(out_dir)!r} holds checkpoints ({existing[-1][1].name}, ...) but no "
                f"{RECIPE_FILE}: not a delphi run of this recipe; choose another out_dir or pass --overwrite"
            )
        if recipe.resume == "never" and existing:
            raise DelphiError(
                f"out_dir {str(out_dir)!r} already holds checkpoints up to {existing[-1][1].name} and "
                "resume is 'never'; use resume: auto to continue, or --overwrite to start over"
            )
    if recipe.resume == "auto":  # (DelphiTrainer.train removes a killed save's `.stepN.tmp` leftovers)
        return latest_resumable(out_dir), []
    return _explicit_resume(recipe), []


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _explicit_resume(recipe: Recipe) -> Path | None:
    from delphi.hub import parse_hub_ref
    from delphi.train.checkpoints import has_resume_state

    if recipe.resume in ("auto", "never"):
        return None
    if parse_hub_ref(recipe.resume) is not None:
        from delphi.train.publish import download_checkpoint

        return download_checkpoint(recipe.resume, Path(recipe.out_dir))
    path = Path(recipe.resume)
    if not (path.is_dir() and is_complete(path) and has_resume_state(path)):
        raise DelphiError(
            f"resume {recipe.resume!r} is not a complete checkpoint with optimizer state "
            "(expected a step folder holding checkpoint.json and optimizer.pt)"
        )
    return path


def _check_wandb(recipe: Recipe) -> None:
    if not recipe.wandb:
        return
    mode = os.environ.get("WANDB_MODE")
    if mode is not None and mode.strip() == "":
        raise DelphiError("WANDB_MODE is set but empty; use online, offline or disabled (or unset it)")
    if mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    raise DelphiError(
        f"recipe logs to W&B ({recipe.wandb!r}) but no W&B login was found; set WANDB_API_KEY, "
        "run `wandb login`, or set WANDB_MODE=offline (sync later with `wandb sync`)"
    )


def _wandb_env(recipe: Recipe) -> None:
    entity_project = recipe.wandb_entity_project
    if entity_project is None:
        return
    entity, project = entity_project
    os.environ["WANDB_PROJECT"] = project
    if entity:
        os.environ["WANDB_ENTITY"] = entity
    os.environ.setdefault("WANDB_LOG_MODEL", "false")


def _load_data(recipe: Recipe, vocab_size: int):
    from delphi.train.data import check_token_dataset, load_token_split

    data = recipe.data
    train = load_token_split(data.path, data.train_split, data.feature)
    check_token_dataset(
        train, seq_len=recipe.seq_len, vocab_size=vocab_size, source=data.path, split=data.train_split
    )
    validation = load_token_split(data.path, data.validation_split, data.feature)
    if data.validation_size is not None:
        if data.validation_size > len(validation):
            raise DelphiError(
                f"data.validation_size {data.validation_size} is larger than the validation split "
                f"{data.validation_split!r} of {data.path!r} ({len(validation)} sequences)"
            )
        validation = validation.select(range(data.validation_size))
    check_token_dataset(
        validation,
        seq_len=recipe.seq_len,
        vocab_size=vocab_size,
        source=data.path,
        split=data.validation_split,
    )
    if len(train) < recipe.batch_size:
        raise DelphiError(
            f"the train split of {data.path!r} has {len(train)} sequences, fewer than one batch "
            f"(batch_size {recipe.batch_size})"
        )
    return train, validation


def _total_steps(recipe: Recipe, steps_per_epoch: int) -> int:
    max_steps = recipe.training.get("max_steps", -1)
    if max_steps is not None and max_steps > 0:
        return int(max_steps)
    epochs = recipe.training.get("num_train_epochs", 3.0)
    return max(1, math.ceil(epochs * steps_per_epoch))


def train(recipe: Recipe, *, overwrite: bool = False, callbacks: list | tuple = ()) -> dict:
    """Train `recipe` to its end (resuming if it can) and return a summary of the run."""
    import torch

    from delphi.mamba import check_scan_path
    from delphi.models import build_config, build_model, check_vocab, count_parameters
    from delphi.tokenizer import load_tokenizer
    from delphi.train.checkpoints import list_checkpoints, read_checkpoint_meta, run_context
    from delphi.train.launch import warn_if_world_size_differs
    from delphi.train.publish import close_hub_uploader, open_hub_uploader
    from delphi.train.schedule import checkpoint_steps, format_steps
    from delphi.train.trainer import DelphiTrainer

    ws = world_size()
    if is_main_process():
        warn_if_world_size_differs(ws)
    recipe.batch_split(ws)  # fails early when the batch cannot be split over this world size
    _check_wandb(recipe)
    resume_from, old_run = prepare_out_dir(recipe, overwrite=overwrite)

    config = build_config(recipe.model)
    if recipe.model["architecture"] == "MambaForCausalLM":
        check_scan_path(recipe.mamba_scan)
    tokenizer = load_tokenizer(recipe.tokenizer)
    check_vocab(config.vocab_size, tokenizer_vocab_size=len(tokenizer))
    train_ds, eval_ds = _load_data(recipe, config.vocab_size)
    user_callbacks = [cls() for cls in recipe.callback_classes()] + list(callbacks)

    steps_per_epoch = len(train_ds) // recipe.batch_size
    total = _total_steps(recipe, steps_per_epoch)
    schedule = recipe.checkpoints
    steps = checkpoint_steps(
        total,
        every=schedule.every or None,
        steps=schedule.steps,
        per_epoch=schedule.per_epoch,
        steps_per_epoch=steps_per_epoch,
    )
    extra = dict(max_steps=total, save_strategy="no", eval_strategy="no")
    if not torch.cuda.is_available():
        extra["use_cpu"] = True  # also makes accelerate pick gloo DDP under torchrun
    _wandb_env(recipe)
    args = recipe.training_arguments(ws, **extra)

    model = build_model(recipe.model, seed=recipe.seeds.init, mamba_scan=recipe.mamba_scan)
    total_params, non_embedding = count_parameters(model)
    micro, accumulation = recipe.batch_split(ws)
    context = run_context(world_size=ws)
    context.update(recipe=recipe.name, parameters=total_params, non_embedding_parameters=non_embedding)
    run_files = {
        RECIPE_FILE: recipe.dump_yaml(),
        "run_context.json": json.dumps(context, indent=2, sort_keys=True) + "\n",
    }
    trainer = DelphiTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=user_callbacks,
        checkpoint_steps=steps,
        seq_len=recipe.seq_len,
        run_files=run_files,
        keep_optimizer=schedule.keep_optimizer,
    )
    if recipe.wandb:
        trainer.add_callback(RecipeToWandb(recipe))
    # the last check (is the hub reachable?) comes last, as it starts the upload thread
    uploader = open_hub_uploader(recipe, main_process=is_main_process())
    if uploader is not None:
        trainer.add_callback(HubPublisher(uploader))

    run_lock = contextlib.ExitStack()  # one trainer per out_dir; `delphi suite --status` sees it running
    if is_main_process():
        run_lock.enter_context(hold_run_lock(recipe.out_dir))
        _remove(old_run)  # --overwrite: only now that every check has passed
        Path(recipe.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(recipe.out_dir) / RECIPE_FILE).write_text(recipe.dump_yaml())
        log.info(
            "%s: %s, %s parameters (%s without embeddings); %d train / %d validation sequences of %d",
            recipe.name, recipe.model["architecture"], f"{total_params:,}", f"{non_embedding:,}",
            len(train_ds), len(eval_ds), recipe.seq_len,
        )  # fmt: skip
        log.info(
            "global batch %d = %d process(es) x %d micro x %d accumulation; %d steps (%d per epoch), %s tokens/step",
            recipe.batch_size, ws, micro, accumulation, total, steps_per_epoch, f"{recipe.tokens_per_step:,}",
        )  # fmt: skip
        log.info("checkpoints at steps: %s", format_steps(steps))
        if resume_from is not None:
            log.info("resuming from %s", resume_from)
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        if recipe.wandb:
            import wandb

            if wandb.run is not None:
                wandb.finish()  # flush: HF's callback leaves the run open for more logging
        hub_summary = close_hub_uploader(uploader, recipe, main_process=is_main_process())
        run_lock.close()

    saved = list_checkpoints(recipe.out_dir)
    final = read_checkpoint_meta(saved[-1][1]) if saved else {}
    summary = {
        "out_dir": str(recipe.out_dir),
        "steps": total,
        "checkpoints": [step for step, _ in saved],
        "final_checkpoint": str(saved[-1][1]) if saved else None,
        "eval_loss": final.get("eval_loss"),
        "parameters": total_params,
        "hub": hub_summary,
    }
    if is_main_process():
        log.info(
            "done: %d checkpoints in %s; final validation loss %s",
            len(saved), recipe.out_dir, final.get("eval_loss"),
        )  # fmt: skip
    return summary


class RecipeToWandb(TrainerCallback):
    """Adds the fully resolved recipe to the W&B run config once HF's WandbCallback has started the run."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def on_train_begin(self, args, state, control, **kwargs):
        import wandb

        if wandb.run is not None:
            wandb.config.update({"delphi_recipe": self.recipe.to_dict()}, allow_val_change=True)


class HubPublisher(TrainerCallback):
    """Hands every checkpoint the Trainer saves to a `HubUploader` (main process only)."""

    def __init__(self, uploader):  # a delphi.train.publish.HubUploader
        self.uploader = uploader

    def on_save(self, args, state, control, **kwargs):
        if not args.should_save:
            return
        folder = checkpoint_dir(args.output_dir, state.global_step)
        if is_complete(folder):
            self.uploader.submit(folder, is_final=state.global_step >= state.max_steps)
