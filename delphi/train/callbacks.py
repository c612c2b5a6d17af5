"""Every `transformers.TrainerCallback` delphi adds to a run, in one place.

- `ScheduleCallback`: log, evaluate and save at exactly the scheduled steps; keep the sampler's epoch right.
- `CheckpointFinalizer`: turn the folder Trainer just saved into delphi's atomic `step{N}` (on_save).
- `OnFirstCheckpoint`: commit the run (its recipe.yaml; drop a replaced run) once it has a checkpoint.
- `RecipeToWandb`: put the fully resolved recipe into the W&B run's config.
- `HubPublisher`: hand each finished checkpoint to the background hub uploader.

The two first are added by `DelphiTrainer` itself, before any user callback, so a user's `on_save`
already sees the finished `step{N}` folder.
"""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

from delphi import signals
from delphi.layout import checkpoint_dir, is_complete, trainer_checkpoint_dir
from delphi.train.checkpoints import finalize_checkpoint

logger = logging.getLogger("delphi.train")


class ScheduleCallback(TrainerCallback):
    """Asks the Trainer to log, evaluate and save at the scheduled steps; keeps the sampler's epoch right."""

    def __init__(self, trainer):  # a DelphiTrainer
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.start_throughput_clock(state.global_step)

    def on_epoch_begin(self, args, state, control, **kwargs):
        # accelerate does not forward `set_epoch` through every wrapper (a resumed multi-process
        # dataloader wraps the sampler twice), so set it here, from the step count alone.
        sampler = self.trainer.train_sampler
        if sampler is not None:
            sampler.set_epoch(state.global_step // sampler.steps_per_epoch)

    def on_step_end(self, args, state, control, **kwargs):
        signals.check()  # a Ctrl-C whose exception was swallowed somewhere is raised again here
        if state.global_step in self.trainer.checkpoint_steps or state.global_step >= state.max_steps:
            control.should_log = True
            control.should_evaluate = self.trainer.eval_dataset is not None
            control.should_save = True


class CheckpointFinalizer(TrainerCallback):
    """After Trainer has written `checkpoint-{N}`: run files, `checkpoint.json` last, rename to `step{N}`.

    Every process waits until all have written their part (RNG state is saved per process), then the
    main process finalizes, then all wait again, so no process runs ahead of a published checkpoint.
    """

    def __init__(self, trainer):  # a DelphiTrainer
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        trainer = self.trainer
        started = time.perf_counter()
        trainer.accelerator.wait_for_everyone()
        if args.should_save:
            final = finalize_checkpoint(
                trainer_checkpoint_dir(args.output_dir, state.global_step),
                args.output_dir,
                state.global_step,
                run_files=trainer.current_run_files(),
                meta=trainer.checkpoint_meta(),
                keep_optimizer=trainer.keep_optimizer,
            )
            logger.info("checkpoint %s written", final)
        trainer.accelerator.wait_for_everyone()
        trainer.pause_throughput_clock(time.perf_counter() - started)


class OnFirstCheckpoint(TrainerCallback):
    """Calls `action(step_folder)` once, on the main process, when this run has published its first checkpoint."""

    def __init__(self, action):
        self.action = action
        self.done = False

    def on_save(self, args, state, control, **kwargs):
        folder = checkpoint_dir(args.output_dir, state.global_step)
        if not self.done and args.should_save and is_complete(folder):
            self.done = True
            self.action(folder)


class RecipeToWandb(TrainerCallback):
    """Adds the fully resolved recipe to the W&B run config once HF's WandbCallback has started the run."""

    def __init__(self, recipe):
        self.recipe = recipe

    def on_train_begin(self, args, state, control, **kwargs):
        import wandb

        if wandb.run is not None:
            wandb.config.update({"delphi_recipe": self.recipe.to_dict()}, allow_val_change=True)


class HubPublisher(TrainerCallback):
    """Hands every finished checkpoint to a `delphi.hub.publish.HubUploader` (main process only)."""

    def __init__(self, uploader):
        self.uploader = uploader

    def on_save(self, args, state, control, **kwargs):
        if not args.should_save:
            return
        folder = checkpoint_dir(args.output_dir, state.global_step)
        if is_complete(folder):
            self.uploader.submit(folder, is_final=state.global_step >= state.max_steps)
