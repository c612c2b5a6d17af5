"""Train one recipe: every check first, then the out_dir, then the Trainer.

The order is the point. Everything that can fail before the first optimizer step is tried while the
out_dir is untouched: the recipe, the launcher's layout, the out_dir's state (`delphi.train.outdir`), the
tokenizer, the data, the model, the Trainer with its reporting integrations, the recipe's callbacks, the
optimizer and learning-rate schedule, the hub. Only then is the out_dir committed to (locked; a run being
replaced set aside), and a run that fails before its first checkpoint leaves it as it was. A complete
run is never touched again: rerunning it prints where it is and exits 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainingArguments
from transformers.utils import logging as hf_logging

from delphi import atomic
from delphi.data.tokenizer import load_tokenizer
from delphi.errors import DelphiError
from delphi.hub.publish import check_hub, close_hub_uploader, drop_hub_resume, open_hub_uploader
from delphi.hub.repo_run import RepoRun
from delphi.layout import (
    HUB_RESUME_DIR,
    LOCK_FILE,
    RECIPE_FILE,
    REPLACED_DIR,
    RUN_CONTEXT_FILE,
    list_checkpoints,
    read_checkpoint_meta,
)
from delphi.mamba import check_scan_path, scan_paths_in_use
from delphi.models import build_config, build_model, check_vocab, count_parameters
from delphi.provenance import run_context
from delphi.recipe import Recipe, recipe_problems, refusal
from delphi.recipe.optimizer import OPTIMIZER_KEYS, optimizer_value_problems
from delphi.recipe.schedule import checkpoint_steps, format_steps, training_steps
from delphi.recipe.usercode import import_callback
from delphi.run_status import hold_run_lock, lock_holder
from delphi.train.arguments import training_arguments
from delphi.train.callbacks import HubPublisher, OnFirstCheckpoint, RecipeToWandb
from delphi.train.checkpoints import disk_full_error, is_disk_full, remove_partial_checkpoint
from delphi.train.data import load_run_data
from delphi.train.distributed import (
    agree,
    check_parallelism,
    check_shared_out_dir,
    end_processes,
    is_main_process,
    warn_if_devices_idle,
    warn_if_world_size_differs,
    world_size,
)
from delphi.train.fused_forward import use_fused_loss
from delphi.train.outdir import (
    OutDirPlan,
    drop_set_aside_run,
    plan_out_dir,
    recipe_files,
    remove_failed_start,
    restore_set_aside_run,
    set_aside_run,
)
from delphi.train.tracking import check_wandb, finish_wandb, set_wandb_env
from delphi.train.trainer import DelphiTrainer

log = logging.getLogger("delphi.train")


@dataclass(frozen=True)
class RunSetup:
    """What a run needs from its recipe and this machine, resolved once before anything else and passed
    down: nothing after this asks the environment or the recipe for the run's layout again."""

    recipe: Recipe
    world_size: int  # processes of this run (the launcher's)
    main: bool  # this process writes the out_dir and speaks for the run
    out_dir: Path
    existed: bool  # the out_dir was there before this invocation
    overwrite: bool  # --overwrite: replace a different run in out_dir and on the hub repo
    args: TrainingArguments  # built once; building them set up the process group


def train(recipe: Recipe, *, overwrite: bool = False, callbacks: list | tuple = ()) -> dict:
    """Train `recipe` to its end (resuming if it can) and return a summary of the run.

    The summary (on every process; `main_process` says which one may print it): out_dir, steps,
    checkpoints, final_checkpoint, eval_loss, parameters, hub, complete_before (True when the run was
    already complete and nothing was done).
    """
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
    setup = resolve_run(recipe, overwrite=overwrite)
    try:
        return _train(setup, list(callbacks))
    finally:
        end_processes()


def resolve_run(recipe: Recipe, *, overwrite: bool = False) -> RunSetup:
    """Every check that needs no data or model (`recipe_problems`, the same as `delphi validate` and
    `delphi suite` make, and W&B's login), then the TrainingArguments (which set up the process group)."""
    ws, main = world_size(), is_main_process()
    if main:
        warn_if_world_size_differs(ws)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        warn_if_devices_idle(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), _visible_gpus())
    out_dir = Path(recipe.out_dir)
    # a run going on from its own checkpoints does not read `resume:`
    problems = recipe_problems(recipe, world_size=ws, resumes=_has_checkpoints(out_dir))
    if problems:
        raise DelphiError(refusal(recipe.name, problems))
    check_wandb(recipe)
    set_wandb_env(recipe)
    args = training_arguments(recipe, ws)
    return RunSetup(recipe, ws, main, out_dir, out_dir.exists(), overwrite, args)


def _has_checkpoints(out_dir: Path) -> bool:
    return out_dir.is_dir() and bool(list_checkpoints(out_dir))


def _visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _train(setup: RunSetup, callbacks: list) -> dict:
    recipe, out_dir = setup.recipe, setup.out_dir
    check_shared_out_dir(out_dir)  # before any process reads the out_dir for a decision
    try:
        plan = agree(lambda: plan_out_dir(recipe, overwrite=setup.overwrite))
    except BaseException:
        if setup.main:
            if lock_holder(out_dir) is None:  # not another trainer's download
                drop_hub_resume(out_dir)  # e.g. a hub `resume:` whose model is not this recipe's
            if not setup.existed:
                _remove_if_only_leftovers(out_dir)
        raise
    if plan.action == "complete":
        return _complete_run(setup, plan.final_checkpoint)
    try:
        run = _prepare(setup, callbacks)
    except BaseException:
        if setup.main:
            if lock_holder(out_dir) is None:  # not another trainer's download
                drop_hub_resume(out_dir)
            if not setup.existed:
                _remove_if_only_leftovers(out_dir)
        raise
    return _run(setup, run, plan)


@dataclass
class _PreparedRun:
    """Everything `_prepare` built and checked; nothing of it has touched the out_dir yet."""

    trainer: DelphiTrainer
    total: int  # optimizer steps of the run
    steps: list[int]  # checkpoint steps
    steps_per_epoch: int
    online: RepoRun | None  # the hub is there to publish to (what publishing there means); None: offline
    parameters: tuple[int, int]  # (total, without embeddings)
    sizes: tuple[int, int]  # (train, validation) sequences


def _prepare(setup: RunSetup, callbacks: list) -> _PreparedRun:
    """Build and check everything that can fail before the first optimizer step."""
    recipe, args = setup.recipe, setup.args
    config = build_config(recipe.model)
    if recipe.model["architecture"] == "MambaForCausalLM":
        check_scan_path(recipe.mamba_scan)
    tokenizer = load_tokenizer(recipe.tokenizer)
    check_vocab(config.vocab_size, tokenizer_vocab_size=len(tokenizer))
    train_ds, eval_ds = load_run_data(recipe, config.vocab_size)
    callbacks = [import_callback(spec, recipe.search_dirs)() for spec in recipe.callbacks] + callbacks
    if recipe.wandb:
        callbacks.append(RecipeToWandb(recipe))

    check_parallelism(args)
    steps_per_epoch = len(train_ds) // recipe.batch_size
    total = training_steps(args, steps_per_epoch)
    schedule = recipe.checkpoints
    steps = checkpoint_steps(
        total,
        every=schedule.every or None,
        steps=schedule.steps,
        per_epoch=schedule.per_epoch,
        steps_per_epoch=steps_per_epoch,
    )
    model = build_model(recipe.model, seed=recipe.seeds.init, mamba_scan=recipe.mamba_scan)
    use_fused_loss(model, recipe.fused_loss)  # before the Trainer reads the model's forward
    parameters = count_parameters(model)
    trainer = _make_trainer(setup, model, tokenizer, (train_ds, eval_ds), steps, callbacks, parameters)
    if recipe.evaluation.tasks:  # lm-evaluation-harness tasks at every checkpoint (delphi.train.in_loop_eval)
        from delphi.train.in_loop_eval import TaskEvaluation

        trainer.add_callback(TaskEvaluation(trainer, recipe.evaluation))
    check_parallelism(args, trainer)
    _check_optimizer_and_schedule(trainer, total)
    _warn_about_warmup(args, total)  # once the learning rate is known to be valid
    # last: the slowest check, and it may need the network; None = no hub (or offline), else a RepoRun
    online = agree(lambda: check_hub(recipe, overwrite=setup.overwrite))
    return _PreparedRun(
        trainer=trainer,
        total=total,
        steps=steps,
        steps_per_epoch=steps_per_epoch,
        online=online,
        parameters=parameters,
        sizes=(len(train_ds), len(eval_ds)),
    )


def _make_trainer(setup: RunSetup, model, tokenizer, datasets, steps, callbacks, parameters) -> DelphiTrainer:
    recipe = setup.recipe

    def run_files() -> dict[str, str]:
        """The recipe and the run context, as of this checkpoint (written into every step folder)."""
        context = run_context(world_size=setup.world_size)
        context.update(recipe=recipe.name, parameters=parameters[0], non_embedding_parameters=parameters[1])
        if recipe.model["architecture"] == "MambaForCausalLM":
            context["mamba_scan"] = scan_paths_in_use(model)  # the scan that really ran, per device and dtype
        context_text = json.dumps(context, indent=2, sort_keys=True) + "\n"
        return {RECIPE_FILE: recipe.dump_yaml(), RUN_CONTEXT_FILE: context_text}

    try:
        return DelphiTrainer(
            model=model,
            args=setup.args,
            train_dataset=datasets[0],
            eval_dataset=datasets[1],
            processing_class=tokenizer,
            callbacks=callbacks,
            checkpoint_steps=steps,
            seq_len=recipe.seq_len,
            run_files=run_files,
            keep_optimizer=recipe.checkpoints.keep_optimizer,
            data_order=recipe.data.order,
            weight_decay_params=recipe.weight_decay_params,
            ledger=recipe.ledger,
        )
    except RuntimeError as e:  # a `report_to` integration whose package is missing
        raise DelphiError(_integration_error(e)) from e


def _integration_error(error: RuntimeError) -> str:
    text = " ".join(str(error).split())
    for package in ("tensorboard", "wandb", "mlflow", "comet_ml", "neptune", "clearml", "dvclive", "trackio"):
        if package in text.lower():
            extra = " (pip install 'delphi[tensorboard]')" if package == "tensorboard" else ""
            return (
                f"training.report_to asks for {package}, which is not installed: pip install {package}{extra}"
            )
    return f"transformers could not set up the Trainer: {text}"


def _check_optimizer_and_schedule(trainer, total: int) -> None:
    """Build the optimizer and learning-rate schedule once (and throw them away), so a bad learning rate,
    beta, epsilon, weight decay or optimizer name fails now, not in the first step. The values are
    checked first by the same function `delphi suite` checks every run with before any starts (torch
    checks only the default group's weight decay, not the Trainer's groups)."""
    try:
        problems = optimizer_value_problems({key: getattr(trainer.args, key) for key in OPTIMIZER_KEYS})
        if problems:
            raise ValueError("; ".join(problems))
        optimizer = trainer.create_optimizer()
        trainer.create_scheduler(num_training_steps=total, optimizer=optimizer)
    except (ValueError, TypeError, ImportError, RuntimeError, KeyError) as e:
        name = trainer.args.optim
        raise DelphiError(
            f"the optimizer ({getattr(name, 'value', name)}) or learning-rate schedule "
            f"({getattr(trainer.args.lr_scheduler_type, 'value', trainer.args.lr_scheduler_type)}) cannot be "
            f"built from the recipe's training: section: {e}"
        ) from e
    finally:
        trainer.optimizer, trainer.lr_scheduler = None, None  # Trainer builds its own in train()


def _warn_about_warmup(args, total: int) -> None:
    warmup = args.get_warmup_steps(total)
    if warmup >= total:
        peak = args.learning_rate * total / max(warmup, 1)
        log.warning(
            "warmup_steps %d is at least the run's %d steps: the learning rate never reaches %g "
            "(at most %.3g); lower training.warmup_steps or train longer",
            warmup, total, args.learning_rate, peak,
        )  # fmt: skip


def _run(setup: RunSetup, run: _PreparedRun, plan: OutDirPlan) -> dict:
    """Commit to the out_dir and train; undo the commit if the run stops before its first checkpoint."""
    recipe, out_dir, main = setup.recipe, setup.out_dir, setup.main
    trainer = run.trainer
    lock = contextlib.ExitStack()  # one trainer per out_dir; `delphi suite --status` sees it running
    uploader = None
    set_aside = False
    locked = False  # by this process: a refused lock is another trainer's out_dir, not ours to tidy
    keep = recipe_files(recipe)

    def take_out_dir() -> bool:
        """Main process: lock the out_dir and set a replaced run aside (every process hears how it went)."""
        nonlocal locked
        lock.enter_context(hold_run_lock(out_dir))
        locked = True
        if plan.action == "overwrite":
            return bool(set_aside_run(out_dir, keep))
        if plan.action == "fresh":
            remove_failed_start(out_dir, keep)  # a recipe.yaml or unfinished save of an earlier failed start
        return False

    try:
        set_aside = agree(take_out_dir)
    except BaseException:
        lock.close()
        if main and locked and (out_dir / REPLACED_DIR).is_dir():
            restore_set_aside_run(out_dir, keep)
        elif main and not locked and not setup.existed and lock_holder(out_dir) is None:
            _remove_if_only_leftovers(out_dir)  # the lock could not be taken here (no flock): as found
        raise

    def commit(first_checkpoint: Path) -> None:
        atomic.write_text(out_dir / RECIPE_FILE, recipe.dump_yaml())
        drop_set_aside_run(out_dir)
        drop_hub_resume(out_dir)  # every process has read it: the run goes on from its own checkpoints

    try:
        if main:  # inside the try: a Ctrl-C here undoes the start like one during training
            trainer.add_callback(OnFirstCheckpoint(commit))
            if run.online is not None:
                uploader = open_hub_uploader(recipe, run.online)
                trainer.add_callback(HubPublisher(uploader))
            _log_start(setup, run, plan)
        trainer.train(resume_from_checkpoint=plan.resume_from)
    except BaseException as error:
        if main:
            if not list_checkpoints(out_dir):
                remove_failed_start(out_dir, keep)
                if set_aside:
                    restore_set_aside_run(out_dir, keep)
        if is_disk_full(error, out_dir):
            if main:
                remove_partial_checkpoint(out_dir, trainer.state.global_step)
            raise disk_full_error(out_dir, trainer.state.global_step) from error
        if "find_unused_parameters" in str(error):
            raise DelphiError(
                "the model has parameters that its forward pass does not use, so DDP cannot finish the "
                "gradient reduction; set training.ddp_find_unused_parameters: true (delphi's default is false)"
            ) from error
        if setup.world_size > 1 and _is_collective_failure(error):
            saved = list_checkpoints(out_dir)
            raise DelphiError(
                f"another process of this run stopped while this one was training ({_first_line(error)}); "
                f"the checkpoints written so far are intact (newest: {saved[-1][1].name if saved else 'none'}): "
                "see the first error of the other process, then run the same command to resume"
            ) from error
        raise
    finally:
        finish_wandb(recipe)
        hub_summary = close_hub_uploader(uploader, recipe, main_process=main) if main else None
        if main:
            drop_hub_resume(out_dir)
        lock.close()
        if main and not setup.existed and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a fresh out_dir that got no checkpoint goes back to not existing
    saved = list_checkpoints(out_dir)
    if main:
        log.info("done: %d checkpoints in %s", len(saved), out_dir)
    return _summary(recipe, saved, parameters=run.parameters[0], hub=hub_summary, complete_before=False)


def _is_collective_failure(error: BaseException) -> bool:
    """A collective (all-reduce, barrier, ...) failed: in practice, a peer process died."""
    markers = ("Connection closed by peer", "Connection reset by peer", "Gloo", "NCCL", "ProcessGroup")
    backend_error = getattr(dist, "DistBackendError", ())
    return isinstance(error, backend_error) or (
        isinstance(error, RuntimeError) and any(m in str(error) for m in markers)
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def _log_start(setup: RunSetup, run: _PreparedRun, plan: OutDirPlan) -> None:
    recipe, ws = setup.recipe, setup.world_size
    micro, accumulation = recipe.batch_split(ws)
    total_params, non_embedding = run.parameters
    log.info(
        "%s: %s, %s parameters (%s without embeddings); %d train / %d validation sequences of %d",
        recipe.name, recipe.model["architecture"], f"{total_params:,}", f"{non_embedding:,}",
        run.sizes[0], run.sizes[1], recipe.seq_len,
    )  # fmt: skip
    log.info(
        "global batch %d = %d process(es) x %d micro x %d accumulation; %d steps (%d per epoch), %s tokens/step",
        recipe.batch_size, ws, micro, accumulation, run.total, run.steps_per_epoch, f"{recipe.tokens_per_step:,}",
    )  # fmt: skip
    log.info("checkpoints at steps: %s", format_steps(run.steps))
    if plan.resume_from is not None:
        log.info("resuming from %s", plan.resume_from)


def _complete_run(setup: RunSetup, final_checkpoint: str) -> dict:
    """A rerun of a finished run: say so, touch nothing."""
    recipe = setup.recipe
    saved = list_checkpoints(setup.out_dir)
    summary = _summary(recipe, saved, parameters=None, hub=None, complete_before=True)
    if setup.main:
        meta = read_checkpoint_meta(final_checkpoint)
        loss = meta.get("eval_loss")
        log.info(
            "%s is already complete: step %s of %s, validation loss %s, in %s; nothing to do",
            recipe.name, meta.get("step"), meta.get("max_steps"),
            "n/a" if loss is None else f"{loss:.4g}", final_checkpoint,
        )  # fmt: skip
        if setup.overwrite:
            log.info(
                "--overwrite replaces only a different run; to train this one again from scratch, remove "
                "%s or choose another out_dir", recipe.out_dir,
            )  # fmt: skip
        if recipe.hub.repo:
            log.info(
                "to publish any checkpoint missing on the hub: delphi push %s --repo %s",
                recipe.out_dir, recipe.hub.repo,
            )  # fmt: skip
    return summary


def _summary(recipe: Recipe, saved: list, *, parameters, hub, complete_before: bool) -> dict:
    final = read_checkpoint_meta(saved[-1][1]) if saved else {}
    return {
        "out_dir": str(recipe.out_dir),
        "steps": final.get("max_steps"),
        "checkpoints": [step for step, _ in saved],
        "final_checkpoint": str(saved[-1][1]) if saved else None,
        "eval_loss": final.get("eval_loss"),
        "parameters": parameters,
        "hub": hub,
        "complete_before": complete_before,
        "main_process": is_main_process(),
    }


def _remove_if_only_leftovers(out_dir: Path) -> None:
    """After a failed start: remove an out_dir this process created, if nothing but its own leftovers is in it."""
    if not out_dir.is_dir():
        return
    leftovers = {HUB_RESUME_DIR, LOCK_FILE}
    if all(p.name in leftovers for p in out_dir.iterdir()):
        shutil.rmtree(out_dir, ignore_errors=True)
