"""`DelphiTrainer`: a `transformers.Trainer` with delphi's data order, checkpoint schedule and checkpoints.

What it changes, and why:

- data order: `DeterministicEpochSampler` (seed = `args.data_seed`, else `args.seed`), so the sequences
  of every optimizer step depend on the seed and the step alone, not on the hardware;
- weight decay: `weight_decay_params="all"` decays every parameter, as the original delphi suite did;
  the default "transformers" keeps Trainer's groups (no decay on norm weights and biases);
- checkpoints: at exactly `checkpoint_steps` (and the final step), each evaluated first; Trainer writes
  its own checkpoint and `CheckpointFinalizer` (an `on_save` callback) turns it into delphi's atomic
  `step{N}` folder (`delphi.train.checkpoints`), with resume state kept per `keep_optimizer`;
- evaluation: the exact mean loss over every eval sequence (transformers weights the last, shorter
  batch as a full one), plus perplexity;
- ledger (`ledger=True`): each trained sequence's loss at each step, from the step's own forward, written
  to `out_dir/ledger/` at each checkpoint (`delphi.train.ledger`, `delphi.train.ledger_capture`);
- logging: `tokens_seen` and `tokens_per_second` (training time only) next to Trainer's loss,
  learning rate and grad norm, through `Trainer.log`, so every tracker receives them; `mfu` too when
  the model's FLOPs per token and the device's peak are known (`delphi.train.flops`).

Everything else is Trainer's: pass `TrainingArguments`, callbacks, `processing_class=tokenizer`.
`args.save_strategy` and `args.eval_strategy` must be "no" (the schedule replaces them). Only public
Trainer API is used (overridden: `get_train_dataloader`, `train`, `training_step`, `log`, `evaluate`,
`evaluation_loop`, `prediction_step`).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import Trainer

from delphi.errors import DelphiError
from delphi.layout import (
    CONFIG_FILE,
    META_NAME,
    TRAINER_STATE_NAME,
    WEIGHTS_FILE,
    has_resume_state,
    is_complete,
    latest_resumable,
    read_checkpoint_meta,
)
from delphi.recipe.schema import DATA_ORDERS, KEEP_OPTIMIZER, MIN_SEQ_LEN, WEIGHT_DECAY_PARAMS, check_steps
from delphi.train.callbacks import CheckpointFinalizer, ScheduleCallback
from delphi.train.checkpoints import remove_unfinished_saves
from delphi.train.data import as_model_inputs, collate_sequences
from delphi.train.distributed import end_processes_at_exit
from delphi.train.flops import mfu_inputs
from delphi.train.ledger import truncate as truncate_ledger
from delphi.train.ledger_capture import (
    SEQUENCE_INDEX,
    IndexedRows,
    LedgerRows,
    LedgerWriter,
    attach_recorder,
    with_sequence_index,
)
from delphi.train.resume import build_resume_view, needs_view, resume_view_dir
from delphi.train.sampler import DeterministicEpochSampler

logger = logging.getLogger(__name__)

_RESERVED_FILES = {META_NAME, TRAINER_STATE_NAME, CONFIG_FILE, WEIGHTS_FILE, "training_args.bin"}


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence (shape [batch]): logits[:, t] predicts labels[:, t+1]."""
    vocab = logits.shape[-1]
    token_losses = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1), reduction="none"
    )
    return token_losses.view(labels.shape[0], -1).mean(dim=1)


def _strategy(value) -> str:
    return str(getattr(value, "value", value))


def validate_arguments(args, *, checkpoint_steps, seq_len, run_files, keep_optimizer) -> list[int]:
    """Refuse settings that would break delphi's guarantees; returns the sorted checkpoint steps."""
    if args is None:
        raise DelphiError("DelphiTrainer needs TrainingArguments (args=...)")
    for name in ("save_strategy", "eval_strategy"):
        if _strategy(getattr(args, name)) != "no":
            raise DelphiError(
                f"TrainingArguments.{name} is {_strategy(getattr(args, name))!r}; DelphiTrainer saves and "
                f"evaluates at its checkpoint_steps instead: set {name}='no'"
            )
    if args.train_sampling_strategy != "random":
        raise DelphiError(
            f"TrainingArguments.train_sampling_strategy={args.train_sampling_strategy!r} is not supported: "
            "delphi's data order comes from the data seed alone"
        )
    if args.dataloader_num_workers > 0 and not args.dataloader_in_order:
        raise DelphiError("dataloader_in_order=False would let workers reorder batches; leave it True")
    if args.save_total_limit is not None:
        raise DelphiError(
            "save_total_limit is not supported: delphi keeps every checkpoint (see keep_optimizer)"
        )
    if args.ignore_data_skip:
        logger.warning(
            "ignore_data_skip=True: a resumed run will not see the same data as an uninterrupted one"
        )
    if keep_optimizer not in KEEP_OPTIMIZER:
        raise DelphiError(f"keep_optimizer must be one of {KEEP_OPTIMIZER}, got {keep_optimizer!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < MIN_SEQ_LEN:
        raise DelphiError(f"seq_len must be an integer >= {MIN_SEQ_LEN}, got {seq_len!r}")
    steps = check_steps(checkpoint_steps, "checkpoint steps")
    for name in run_files:
        if Path(name).name != name or name.startswith(".") or name in _RESERVED_FILES:
            raise DelphiError(
                f"run file name {name!r} must be a plain file name, not hidden, and not one of {sorted(_RESERVED_FILES)}"
            )
    return steps


class DelphiTrainer(Trainer):
    """A `transformers.Trainer` for token-sequence datasets (column `tokens`, all `seq_len` long).

    Extra keyword arguments: `checkpoint_steps` (optimizer steps to checkpoint at; the final step is
    always one), `seq_len`, `run_files` ({file name: text} written into every checkpoint, e.g. the
    recipe and run context; or a function returning it, called at each checkpoint), `keep_optimizer`
    ("latest": resume state only in the newest checkpoint; "all"; "none": checkpoints cannot be resumed
    from), `data_order` ("hash", or "delphi-v0.2": the released suite's order; see `delphi.train.sampler`)
    `weight_decay_params` ("transformers" or "all") and `ledger` (True: keep each trained sequence's loss
    at each step in `out_dir/ledger/`; delphi.train.ledger).
    """

    def __init__(
        self,
        model=None,
        args=None,
        *,
        checkpoint_steps: Sequence[int],
        seq_len: int,
        run_files: dict[str, str] | Callable[[], dict[str, str]] | None = None,
        keep_optimizer: str = "latest",
        data_order: str = "hash",
        weight_decay_params: str = "transformers",
        ledger: bool = False,
        train_dataset=None,
        eval_dataset=None,
        data_collator=None,
        callbacks=None,
        **kwargs,
    ):
        self._run_files = run_files if callable(run_files) else dict(run_files or {})
        self.checkpoint_steps = set(
            validate_arguments(
                args,
                checkpoint_steps=checkpoint_steps,
                seq_len=seq_len,
                run_files=self.current_run_files(),
                keep_optimizer=keep_optimizer,
            )
        )
        self.seq_len = seq_len
        self.keep_optimizer = keep_optimizer
        self.data_seed = args.data_seed if args.data_seed is not None else args.seed
        if data_order not in DATA_ORDERS:
            raise DelphiError(f"data_order must be one of {DATA_ORDERS}, got {data_order!r}")
        if weight_decay_params not in WEIGHT_DECAY_PARAMS:
            raise DelphiError(
                f"weight_decay_params must be one of {WEIGHT_DECAY_PARAMS}, got {weight_decay_params!r}"
            )
        self.data_order = data_order
        self.weight_decay_params = weight_decay_params
        _check_train_dataset(train_dataset, seq_len)
        if not isinstance(ledger, bool):
            raise DelphiError(f"ledger must be true or false, got {ledger!r}")
        if ledger and model is None:
            raise DelphiError("ledger=True needs the model itself (model=...), not model_init")
        # the training ledger: each step's per-sequence losses, kept until the next checkpoint writes them
        self.ledger_rows = LedgerRows(attach_recorder(model)) if ledger else None
        # delphi's own callbacks first, so a user's on_save already sees the finished step{N} folder
        # (the ledger's part is written before the checkpoint it belongs to is finalized)
        own = [ScheduleCallback(self), *([LedgerWriter(self)] if ledger else []), CheckpointFinalizer(self)]
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator if data_collator is not None else collate_sequences,
            train_dataset=as_model_inputs(train_dataset),
            eval_dataset=as_model_inputs(eval_dataset),
            callbacks=own + list(callbacks or []),
            **kwargs,
        )
        if self.args.world_size > 1:
            end_processes_at_exit()  # a gloo process that exits with its group alive can abort (134)
        self.train_sampler: DeterministicEpochSampler | None = None
        self._last_eval: tuple[int, dict] | None = None
        self._last_train_log: dict | None = None
        self._eval_sequence_losses: list[torch.Tensor] | None = None
        self._clock: tuple[float, int] | None = None
        self._paused_seconds = 0.0
        self._wall_offset = 0.0
        self._train_started = time.perf_counter()
        # model FLOPs per token and the devices' peak FLOP/s (delphi.train.flops): `mfu` when both are known
        self._flops_per_token, self._peak_flops = mfu_inputs(self.model, self.args, seq_len)

    def current_run_files(self) -> dict[str, str]:
        """{file name: text} of the run's own files, as they are to be written into the next checkpoint."""
        files = self._run_files() if callable(self._run_files) else self._run_files
        return dict(files)

    # ---- sizes ----

    @property
    def global_batch_size(self) -> int:
        """Sequences per optimizer step, over all processes and accumulation steps."""
        return self.get_total_train_batch_size(self.args)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len

    # ---- data order ----

    def get_train_dataloader(self) -> DataLoader:
        """Trainer's train dataloader, in delphi's data order (`DeterministicEpochSampler`).

        Built as Trainer builds it (same loader settings, then `accelerator.prepare`, which shards each
        global batch over the processes), with the one difference that matters: the sampler.
        """
        dataset = self.train_dataset
        if dataset is None:
            raise DelphiError("DelphiTrainer.train needs a train_dataset")
        try:
            size = len(dataset)
        except TypeError as e:
            raise DelphiError(
                "DelphiTrainer needs a train dataset with a length (a map-style dataset)"
            ) from e
        self.train_sampler = DeterministicEpochSampler(
            size, self.data_seed, global_batch_size=self.global_batch_size, order=self.data_order
        )
        args = self.args
        collate = self.data_collator
        if self.ledger_rows is not None:  # each row's index travels with its batch (ledger_capture)
            dataset, collate = IndexedRows(dataset), with_sequence_index(collate)
        loader = DataLoader(
            dataset,
            batch_size=args.per_device_train_batch_size,
            sampler=self.train_sampler,
            collate_fn=collate,
            drop_last=args.dataloader_drop_last,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
            multiprocessing_context=args.dataloader_multiprocessing_context,
            in_order=args.dataloader_in_order,
        )
        return self.accelerator.prepare(loader)

    # ---- optimizer ----

    def get_decay_parameter_names(self, model) -> list[str]:
        """Trainer's decay groups, or every parameter with `weight_decay_params="all"` (the original delphi's)."""
        if self.weight_decay_params == "all":
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    # ---- training, resume ----

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`, resuming from a delphi `step{N}` folder (or, with True, the newest resumable one)."""
        out_dir = Path(self.args.output_dir)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = latest_resumable(out_dir)
            if resume_from_checkpoint is None:
                raise DelphiError(
                    f"no resumable checkpoint (step*/ with optimizer state) in {str(out_dir)!r}"
                )
        self._wall_offset = 0.0
        if self.args.should_save:
            remove_unfinished_saves(out_dir)
        view = None
        start_step = 0
        if resume_from_checkpoint:
            self._wall_offset = self._check_resumable(Path(resume_from_checkpoint))
            start_step = int(read_checkpoint_meta(Path(resume_from_checkpoint)).get("step") or 0)
            view = self._resume_view(Path(resume_from_checkpoint))
            resume_from_checkpoint = str(view or resume_from_checkpoint)
        else:
            resume_from_checkpoint = None
        if self.args.should_save:  # ledger rows of steps this run trains (again) go: every step once
            truncate_ledger(out_dir, start_step)
        self.accelerator.wait_for_everyone()
        self._train_started = time.perf_counter()
        try:
            return super().train(
                resume_from_checkpoint=resume_from_checkpoint,
                trial=trial,
                ignore_keys_for_eval=ignore_keys_for_eval,
                **kwargs,
            )
        finally:
            if view is not None and self.args.should_save:
                shutil.rmtree(view, ignore_errors=True)

    def _resume_view(self, folder: Path) -> Path | None:
        """A resume view of `folder` when it was written by another process layout (delphi.train.resume)."""
        fsdp = bool(self.is_fsdp_enabled)
        if not needs_view(folder, fsdp):
            return None
        if self.args.should_save:
            optimizer = self.create_optimizer()  # the groups Trainer will build, to translate the state
            try:
                build_resume_view(folder, self.model, optimizer, fsdp=fsdp)
            finally:
                self.optimizer = None
        self.accelerator.wait_for_everyone()
        return resume_view_dir(folder)

    def _check_resumable(self, folder: Path) -> float:
        """Refuse a folder this run cannot continue exactly; returns its wall-clock seconds so far."""
        if not folder.is_dir() or not is_complete(folder):
            raise DelphiError(
                f"cannot resume from {str(folder)!r}: not a complete checkpoint (no {META_NAME})"
            )
        if not has_resume_state(folder):
            raise DelphiError(
                f"cannot resume from {str(folder)!r}: it has no optimizer state (only the newest checkpoint "
                "keeps it with keep_optimizer='latest')"
            )
        meta = read_checkpoint_meta(folder)
        meta.setdefault("data_order", "hash")  # checkpoints from before the key existed
        now = {
            "global_batch_size": self.global_batch_size,
            "data_seed": self.data_seed,
            "data_order": self.data_order,
        }
        for key, value in now.items():
            if key in meta and meta[key] != value:
                raise DelphiError(
                    f"cannot resume from {str(folder)!r}: it was trained with {key}={meta[key]}, this run has "
                    f"{key}={value}; the data order would differ"
                )
        return float(meta.get("wall_seconds") or 0.0)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Trainer's step; with the ledger, the per-sequence losses its forward computed are kept."""
        if self.ledger_rows is None:
            return super().training_step(model, inputs, num_items_in_batch)
        indices = inputs.pop(SEQUENCE_INDEX)
        recorder = self.ledger_rows.recorder
        with recorder.recording():
            loss = super().training_step(model, inputs, num_items_in_batch)
        self.ledger_rows.add(self.state.global_step + 1, indices, recorder.take())
        return loss

    # ---- logging ----

    def start_throughput_clock(self, global_step: int) -> None:
        self._clock = (time.perf_counter(), global_step)
        self._paused_seconds = 0.0

    def pause_throughput_clock(self, seconds: float) -> None:
        """Leave `seconds` (evaluation, saving) out of the next tokens-per-second figure."""
        self._paused_seconds += seconds

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.state.global_step > 0:
            logs["tokens_seen"] = self.state.global_step * self.tokens_per_step
        if "loss" in logs and self._clock is not None:
            now = time.perf_counter()
            since, step0 = self._clock
            seconds = now - since - self._paused_seconds
            if self.state.global_step > step0 and seconds > 0:
                logs["tokens_per_second"] = (self.state.global_step - step0) * self.tokens_per_step / seconds
                if self._flops_per_token and self._peak_flops:
                    logs["mfu"] = logs["tokens_per_second"] * self._flops_per_token / self._peak_flops
            self.start_throughput_clock(self.state.global_step)
            self._last_train_log = {"step": self.state.global_step, **logs}
        super().log(logs, start_time)

    # ---- evaluation ----

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        started = time.perf_counter()
        metrics = super().evaluate(*args, **kwargs)
        self._last_eval = (self.state.global_step, dict(metrics))
        seconds = time.perf_counter() - started
        self.pause_throughput_clock(seconds)
        if self.args.should_log:
            logger.info("evaluation at step %d took %.1f s", self.state.global_step, seconds)
        return metrics

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """Trainer's loop, with `{prefix}_loss` replaced by the exact mean over all sequences (+ perplexity)."""
        self._eval_sequence_losses = []
        try:
            output = super().evaluation_loop(
                dataloader,
                description,
                prediction_loss_only=prediction_loss_only,
                ignore_keys=ignore_keys,
                metric_key_prefix=metric_key_prefix,
            )
            losses = self._eval_sequence_losses
        finally:
            self._eval_sequence_losses = None
        if losses:
            loss = torch.cat([x.cpu() for x in losses]).double().mean().item()
            output.metrics[f"{metric_key_prefix}_loss"] = loss
            output.metrics[f"{metric_key_prefix}_perplexity"] = math.exp(min(loss, 700.0))
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if not prediction_loss_only or self._eval_sequence_losses is None or "labels" not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        input_ids, labels = (inputs[k].to(self.args.device) for k in ("input_ids", "labels"))
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = model(input_ids=input_ids, use_cache=False).logits
        losses = sequence_losses(logits, labels)
        # per-sequence values, so gather_for_metrics drops exactly the samples accelerate repeated
        # to even out the last batch across processes
        self._eval_sequence_losses.append(self.accelerator.gather_for_metrics(losses))
        return (None, None, None)

    # ---- checkpoints (written by Trainer, finalized by CheckpointFinalizer) ----

    def checkpoint_meta(self) -> dict:
        """What `checkpoint.json` records about the current step."""
        step = self.state.global_step
        train = self._last_train_log if self._last_train_log and self._last_train_log["step"] == step else {}
        evaluation = self._last_eval[1] if self._last_eval and self._last_eval[0] == step else {}
        return {
            "step": step,
            "max_steps": self.state.max_steps,
            "epoch": self.state.epoch,
            "global_batch_size": self.global_batch_size,
            "seq_len": self.seq_len,
            "sequences_seen": step * self.global_batch_size,
            "tokens_seen": step * self.tokens_per_step,
            "data_seed": self.data_seed,
            "data_order": self.data_order,
            "train_loss": train.get("loss"),
            "learning_rate": train.get("learning_rate"),
            "grad_norm": train.get("grad_norm"),
            "eval_loss": evaluation.get("eval_loss"),
            "eval_perplexity": evaluation.get("eval_perplexity"),
            "eval": evaluation,
            **self._ledger_meta(step),
            "wall_seconds": self._wall_offset + time.perf_counter() - self._train_started,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _ledger_meta(self, step: int) -> dict:
        """`{"ledger": ...}`: what the run's ledger holds up to this checkpoint (its part is already written)."""
        if self.ledger_rows is None:
            return {}
        from delphi.train import ledger

        held = [p for p in ledger.parts(self.args.output_dir) if p[1] <= step]
        found = ledger.summary(self.args.output_dir, held=held)
        return {"ledger": found.as_meta()} if found else {}


def _check_train_dataset(dataset, seq_len: int) -> None:
    """Cheap guards before any work: a sized dataset whose first row matches `seq_len`.

    (`delphi.train.data.check_token_dataset` checks every row; the caller runs it.)
    """
    if dataset is None:
        return
    if not hasattr(dataset, "__len__"):
        raise DelphiError(
            "DelphiTrainer needs a map-style train dataset (with a length): delphi's data order is a "
            "permutation of the rows, which a streaming dataset cannot give"
        )
    column_names = getattr(dataset, "column_names", None)
    if not column_names or "tokens" not in column_names or len(dataset) == 0:
        return
    found = len(dataset[0]["tokens"])
    if found != seq_len:
        raise DelphiError(f"training sequences have {found} tokens, expected seq_len={seq_len}")
