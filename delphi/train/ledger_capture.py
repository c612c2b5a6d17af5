"""Collecting the ledger's rows during training, from the forward each step runs anyway.

- which sequences: `IndexedRows` hands each row's train-split index to the collator beside its tokens
  (`SEQUENCE_INDEX`), so the index travels with the batch through whatever shards it (accelerate's batch
  sampler shard, dispatching); `DelphiTrainer.training_step` takes it out before the model sees the batch.
- their losses: `SequenceLossRecorder`, attached to the model, is filled by the loss the step computes:
  the plain path through the model's `loss_function` (transformers' `ForCausalLMLoss` with the token
  losses kept: `reduction="none"`, then summed, so the loss and its gradients are those of the sum), the
  fused path (delphi.train.fused_forward) through the per-row losses its chunks compute. Nothing is
  recomputed; each sequence's mean is taken over its valid (not -100) targets.
- `LedgerWriter` (an `on_save` callback, before the checkpoint is finalized) gathers the interval's rows
  from every process to process 0, which writes them as one part (delphi.train.ledger).

Rows stay on the device until a checkpoint: no host sync per step.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from delphi.train import ledger as store

SEQUENCE_INDEX = "sequence_index"  # the batch key of each row's train-split index
RECORDER_ATTRIBUTE = (
    "delphi_sequence_losses"  # where the model carries its recorder (the fused path reads it)
)


class IndexedRows(torch.utils.data.Dataset):
    """A map-style dataset whose rows also carry their own index (`SEQUENCE_INDEX`)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        return {**self.dataset[i], SEQUENCE_INDEX: int(i)}

    def __getitems__(self, indices):
        rows = self.dataset.__getitems__(indices) if hasattr(self.dataset, "__getitems__") else None
        if rows is None:
            rows = [self.dataset[i] for i in indices]
        return [{**row, SEQUENCE_INDEX: int(i)} for row, i in zip(rows, indices, strict=True)]


def with_sequence_index(collate):
    """`collate` for rows that carry `SEQUENCE_INDEX`: the batch gets it as an int64 tensor."""

    def collate_indexed(rows):
        indices = [row.pop(SEQUENCE_INDEX) for row in rows]
        batch = collate(rows)
        batch[SEQUENCE_INDEX] = torch.tensor(indices, dtype=torch.int64)
        return batch

    return collate_indexed


class SequenceLossRecorder:
    """Per-sequence losses of the forward passes run inside `recording()`, as the loss computed them."""

    def __init__(self):
        self.active = False
        self._losses: list[torch.Tensor] = []

    @contextlib.contextmanager
    def recording(self):
        self.active, self._losses = True, []
        try:
            yield
        finally:
            self.active = False

    def add_token_losses(self, token_losses: torch.Tensor, targets: torch.Tensor, batch: int) -> None:
        """`token_losses` and `targets` of one forward, flattened [batch * positions]; ignored targets
        (-100) count for nothing (their loss must be 0)."""
        valid = (targets != -100).view(batch, -1)
        total = token_losses.detach().float().view(batch, -1).sum(dim=1)
        self._losses.append(total / valid.sum(dim=1).clamp(min=1))

    def take(self) -> torch.Tensor | None:
        """The recorded per-sequence losses (concatenated in batch order), or None if none were recorded."""
        losses, self._losses = self._losses, []
        return torch.cat(losses) if losses else None


def recording_loss_function(original, recorder: SequenceLossRecorder):
    """The model's `loss_function`, keeping each sequence's loss while `recorder` records.

    Same arithmetic as transformers' `ForCausalLMLoss` (fp32 logits, shifted labels, -100 ignored) with
    `reduction="none"` summed: the gradients reaching the model are those of the plain loss.
    """

    def loss_function(
        logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100, shift_labels=None, **kwargs
    ):
        if not recorder.active:
            return original(
                logits,
                labels,
                vocab_size,
                num_items_in_batch=num_items_in_batch,
                ignore_index=ignore_index,
                shift_labels=shift_labels,
                **kwargs,
            )
        logits = logits.float()
        if shift_labels is None:
            labels = F.pad(labels, (0, 1), value=ignore_index)
            shift_labels = labels[..., 1:].contiguous()
        targets = shift_labels.view(-1).to(logits.device)
        token_losses = F.cross_entropy(
            logits.view(-1, vocab_size), targets, ignore_index=ignore_index, reduction="none"
        )
        recorder.add_token_losses(token_losses, targets, logits.shape[0])
        if num_items_in_batch is None:
            return token_losses.sum() / (targets != ignore_index).sum()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(token_losses.device)
        return token_losses.sum() / num_items_in_batch

    loss_function.delphi_recording = original
    return loss_function


def attach_recorder(model) -> SequenceLossRecorder:
    """Give `model` (a transformers *ForCausalLM, fused or not) a recorder both loss paths fill."""
    recorder = getattr(model, RECORDER_ATTRIBUTE, None)
    if recorder is None:
        recorder = SequenceLossRecorder()
        setattr(model, RECORDER_ATTRIBUTE, recorder)
    if hasattr(model, "loss_function") and not hasattr(model.loss_function, "delphi_recording"):
        model.loss_function = recording_loss_function(model.loss_function, recorder)
    return recorder


class LedgerRows:
    """The rows of the current checkpoint interval, on this process, until `LedgerWriter` writes them.

    Kept in a few buffers that grow by doubling, not as small tensors per step: a thousand small tensors
    held between the step's large temporaries fragment the CPU heap, and the freed large blocks then come
    back as fresh pages (measured: +25% page faults and several % of a step on the demo model)."""

    def __init__(self, recorder: SequenceLossRecorder):
        self.recorder = recorder
        self._rows = 0
        self._step: torch.Tensor | None = None  # int64 [capacity], on the losses' device
        self._index: torch.Tensor | None = None  # int64 [capacity]
        self._loss: torch.Tensor | None = None  # float32 [capacity]

    def add(self, step: int, indices: torch.Tensor, losses: torch.Tensor | None) -> None:
        if losses is None or losses.numel() != indices.numel():
            found = "none" if losses is None else losses.numel()
            raise RuntimeError(
                f"ledger: step {step} trained on {indices.numel()} sequences but the loss recorded {found} "
                "per-sequence losses (a loss path that does not report them)"
            )
        end = self._rows + indices.numel()
        if self._loss is None or end > self._loss.numel():
            self._grow(
                max(end, 2 * (self._loss.numel() if self._loss is not None else 0), 1024), losses.device
            )
        self._step[self._rows : end] = step
        self._index[self._rows : end].copy_(indices.reshape(-1), non_blocking=True)
        self._loss[self._rows : end].copy_(losses.reshape(-1))
        self._rows = end

    def _grow(self, capacity: int, device) -> None:
        old = (self._step, self._index, self._loss)
        self._step = torch.empty(capacity, dtype=torch.int64, device=device)
        self._index = torch.empty(capacity, dtype=torch.int64, device=device)
        self._loss = torch.empty(capacity, dtype=torch.float32, device=device)
        if old[0] is not None:
            for new, kept in zip((self._step, self._index, self._loss), old, strict=True):
                new[: self._rows] = kept[: self._rows]

    def gather(self, accelerator) -> tuple | None:
        """(step, index, loss) numpy arrays of every process's rows (a collective: every process calls it);
        None when the interval has no rows. The buffer is emptied."""
        import numpy as np

        device = accelerator.device
        if self._rows:
            steps, indices, losses = (
                x[: self._rows].to(device) for x in (self._step, self._index, self._loss)
            )
        else:
            steps = torch.empty(0, dtype=torch.int64, device=device)
            indices = torch.empty(0, dtype=torch.int64, device=device)
            losses = torch.empty(0, dtype=torch.float32, device=device)
        self._rows = 0  # the buffers are kept for the next interval
        if accelerator.num_processes > 1:
            steps, indices, losses = (accelerator.gather(x) for x in (steps, indices, losses))
        if steps.numel() == 0:
            return None
        return tuple(np.array(x.cpu().numpy()) for x in (steps, indices, losses))


class LedgerWriter(TrainerCallback):
    """At each checkpoint, before `CheckpointFinalizer`: the interval's rows from every process, written by
    process 0 as one ledger part; the checkpoint's `checkpoint.json` then records what the ledger holds."""

    def __init__(self, trainer):  # a DelphiTrainer with a ledger
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        trainer = self.trainer
        gathered = trainer.ledger_rows.gather(trainer.accelerator)
        if gathered is None or not args.should_save:
            return
        steps, indices, losses = gathered
        epochs = (steps - 1) // trainer.train_sampler.steps_per_epoch
        store.write_part(args.output_dir, steps, epochs, indices, losses)
