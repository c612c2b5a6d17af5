"""A causal LM's training loss without ever holding the whole batch's logits: fused linear + cross-entropy.

A plain training step materializes `batch x seq x vocab` logits, their fp32 copy for the loss and their
gradient; for delphi's small models (vocab 4096, hidden 64..700) that is most of a step's memory. Here the
final hidden states are cut into chunks of rows; for each chunk the logits are computed, the loss summed
and the gradients with respect to the hidden states and the output embedding computed at once, and the
chunk's logits dropped. Backward then only scales the stored gradients (the approach of Liger-Kernel's
fused linear cross-entropy, in plain PyTorch, so it runs on any device).

Putting it into a model's forward is delphi.train.fused_forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
# A chunk's logits have at most this many elements (128 MiB in fp32): larger matmuls are no faster.
MAX_CHUNK_ELEMENTS = 2**25
# ... and at least this many rows (unless the batch is smaller): fewer rows leave Python overhead visible.
MIN_CHUNK_ROWS = 1024


def chunk_rows_for(rows: int, hidden: int, vocab: int) -> int:
    """Rows per chunk: Liger's rule (a chunk's logits about as large as all hidden states), clamped.

    Clamped to [MIN_CHUNK_ROWS, MAX_CHUNK_ELEMENTS / vocab] so tiny models do not run thousands of
    tiny chunks and large ones do not hold more logits than a full-speed matmul needs.
    """
    growth = math.ceil(vocab / hidden)
    liger = 1 << max(0, math.ceil(rows / growth) - 1).bit_length()
    cap = max(1, MAX_CHUNK_ELEMENTS // vocab)
    return max(1, min(rows, cap, max(MIN_CHUNK_ROWS, liger)))


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(hidden @ weight.T + bias, targets) / denominator; gradients made in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, denominator, chunk_rows, need_grads, row_losses=None):
        need_h, need_w, need_b = (need_grads and n for n in ctx.needs_input_grad[:3])
        device_type = hidden.device.type
        # Under autocast the plain path runs the output projection (and its backward) in the autocast
        # dtype and the loss in fp32; the same here, with autocast off inside and the casts explicit.
        autocast = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast else weight.dtype
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        # the loss in fp32 (as transformers' ForCausalLMLoss), or fp64 for fp64 weights (tests)
        loss_dtype = torch.promote_types(dtype, torch.float32)
        denominator = torch.as_tensor(denominator, device=hidden.device).to(loss_dtype)
        # The gradient of the logits is scaled by 1/denominator before the matmuls, with the same
        # arithmetic as the plain path's backward, so the gradient reaching the model is the same to the
        # last bits or so; backward multiplies by grad_output. In fp16, whose range 1/denominator would
        # underflow (the plain path multiplies in the loss scale first), the scaling waits for backward.
        prescale = dtype != torch.float16
        scale = 1.0 / denominator if prescale else torch.ones_like(denominator)
        rows = hidden.shape[0]
        total = torch.zeros((), dtype=loss_dtype, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=loss_dtype, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=loss_dtype, device=bias.device) if need_b else None
        with torch.autocast(device_type, enabled=False):
            for start in range(0, rows, chunk_rows):
                end = min(start + chunk_rows, rows)
                h = hidden[start:end].to(dtype)
                t = targets[start:end]
                valid = t != IGNORE_INDEX
                safe_t = torch.where(valid, t, 0).unsqueeze(1)
                # the chunk's logits, log-softmaxed in fp32 as transformers' ForCausalLMLoss does
                logp = torch.log_softmax(F.linear(h, w, b).to(loss_dtype), dim=1)
                picked = torch.where(valid, logp.gather(1, safe_t).squeeze(1), 0.0)
                total -= picked.sum()
                if row_losses is not None:  # each row's own loss (the training ledger), 0 where ignored
                    row_losses[start:end] = -picked
                if not (need_h or need_w or need_b):
                    continue
                # d(loss)/d(logits) = (softmax - onehot) * scale, 0 for ignored rows; in place, in logp
                grad = logp.exp_().mul_(scale)
                grad.scatter_add_(1, safe_t, -(valid.unsqueeze(1) * scale))
                grad.mul_(valid.unsqueeze(1))
                g = grad.to(dtype)
                if need_h:
                    grad_h[start:end] = g @ w
                if need_w:
                    grad_w.add_(g.t() @ h)
                if need_b:
                    grad_b.add_(grad.sum(0))
                del logp, grad, g
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.factor = None if prescale else denominator
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total / denominator

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        factor = grad_loss if ctx.factor is None else grad_loss / ctx.factor
        w_dtype, b_dtype = ctx.dtypes
        gh = grad_h * factor.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * factor).to(w_dtype) if grad_w is not None else None
        gb = (grad_b * factor).to(b_dtype) if grad_b is not None else None
        return gh, gw, gb, None, None, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    num_items_in_batch: torch.Tensor | int | None = None,
    chunk_rows: int | None = None,
    row_losses: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of `hidden @ weight.T + bias` against `targets` (rows x hidden, rows), `-100` ignored.

    Sum divided by `num_items_in_batch` when given, else the mean over non-ignored targets (as
    `transformers`' `fixed_cross_entropy`). Holds one chunk of `chunk_rows` rows of logits at a time.
    `row_losses` (a tensor of `rows` elements, optional) receives each row's loss (0 where ignored).
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1).to(hidden.device)
    if targets.shape[0] != hidden.shape[0]:
        raise ValueError(f"{targets.shape[0]} targets for {hidden.shape[0]} rows of hidden states")
    if num_items_in_batch is None:
        denominator = (targets != IGNORE_INDEX).sum()
    elif torch.is_tensor(num_items_in_batch):
        denominator = num_items_in_batch.to(hidden.device)
    else:
        denominator = num_items_in_batch
    rows = chunk_rows or chunk_rows_for(hidden.shape[0], weight.shape[1], weight.shape[0])
    return _FusedLinearCrossEntropy.apply(
        hidden, weight, bias, targets, denominator, rows, torch.is_grad_enabled(), row_losses
    )


def causal_lm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    num_items_in_batch: torch.Tensor | int | None = None,
    chunk_rows: int | None = None,
    recorder=None,
) -> torch.Tensor:
    """transformers' `ForCausalLMLoss` on the logits `hidden @ weight.T + bias`, never all held at once.

    `hidden` is batch x seq x hidden, `labels` batch x seq; position t predicts label t+1 (shifted here).
    `recorder` (delphi.train.ledger_capture.SequenceLossRecorder, optional) receives each sequence's loss.
    """
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    rows = None
    if recorder is not None:
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        rows = torch.empty(targets.numel(), dtype=dtype, device=hidden.device)
    loss = fused_linear_cross_entropy(
        hidden,
        weight,
        targets,
        bias,
        num_items_in_batch=num_items_in_batch,
        chunk_rows=chunk_rows,
        row_losses=rows,
    )
    if recorder is not None:
        recorder.add_token_losses(rows, targets.reshape(-1).to(rows.device), labels.shape[0])
    return loss
