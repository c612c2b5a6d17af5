"""One checkpoint measured on the probe: its weights, the gradients of the probe's loss, and each block's
output (activations), as rows (layer, component, quantity, metric, value).

The gradient is a fresh backward pass of the mean next-token loss over the whole probe (in chunks of
`CHUNK` sequences, each weighted by its share of the tokens), the model in eval mode (no dropout), on a
model loaded for this alone: no optimizer exists, nothing is stepped. The activations are the outputs of
each block (forward hooks), one row per token, kept in float32 only as long as they are needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from delphi.dynamics.components import blocks, named_components
from delphi.dynamics.metrics import (
    grad_metrics,
    linear_cka,
    matrix_metrics,
    relative_distance,
    vector_metrics,
)

CHUNK = 16  # probe sequences per forward/backward: bounds the logits held at once (CHUNK x length x vocab)
BLOCK = "block"  # the component name of a block's output


@dataclass
class ProbePass:
    """What one pass over the probe leaves: each block's output [tokens, hidden] and, if asked, gradients."""

    activations: list[torch.Tensor]
    gradients: dict[str, torch.Tensor] | None
    loss: float


def probe_pass(model, ids: torch.Tensor, *, gradients: bool = True, chunk: int = CHUNK) -> ProbePass:
    """Forward (and, with `gradients`, backward) the probe `ids` [n, length] through `model`."""
    model.eval()
    outputs: list[list[torch.Tensor]] = [[] for _ in blocks(model)]

    def keep(index):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            outputs[index].append(hidden.detach().float().reshape(-1, hidden.shape[-1]).clone())

        return hook

    handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(blocks(model))]
    model.zero_grad(set_to_none=True)
    total = 0.0
    try:
        with torch.set_grad_enabled(gradients):
            for start in range(0, ids.shape[0], chunk):
                part = ids[start : start + chunk]
                loss = model(input_ids=part, labels=part, use_cache=False).loss
                share = part.shape[0] / ids.shape[0]  # every sequence has the same length: tokens pro rata
                if gradients:
                    (loss * share).backward()
                total += loss.item() * share
    finally:
        for handle in handles:
            handle.remove()
    grads = None
    if gradients:
        grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
    return ProbePass([torch.cat(parts) for parts in outputs], grads, total)


def weights_of(model) -> dict[str, torch.Tensor]:
    """A copy of every parameter (to compare a later checkpoint with)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


Row = tuple  # (layer, component, quantity, metric, value)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for the metrics: many small SVDs, sorts and reductions gain nothing from
    threads, and on a busy machine lose much (20 checkpoints' metrics of a 1M-parameter model: 0.4-0.7 s
    each on one thread, 2.7-3.3 s on two, on a 2-core machine with other work). It also makes the metrics'
    bits independent of the thread count (the probe pass's gradients and activations still depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def measure(
    model,
    measured: ProbePass,
    *,
    first: dict[str, torch.Tensor] | None,
    previous: dict[str, torch.Tensor] | None,
    final: ProbePass,
) -> list[Row]:
    """The rows of one checkpoint: weight metrics (and relative distance from the run's first and previous
    checkpoints, when given), gradient norms, and per block the mean token norm and CKA with the final
    checkpoint's output of the same block (computed on one thread: `one_thread`)."""
    with one_thread():
        return _measure(model, measured, first=first, previous=previous, final=final)


def _measure(model, measured: ProbePass, *, first, previous, final: ProbePass) -> list[Row]:
    rows: list[Row] = []
    parameters = dict(model.named_parameters())
    for layer, component, name in named_components(model):
        weight = parameters[name]
        values = matrix_metrics(weight) if weight.dim() >= 2 else vector_metrics(weight)
        for reference, metric in ((first, "rel_dist_first"), (previous, "rel_dist_prev")):
            if reference is not None:
                values[metric] = relative_distance(weight, reference[name])
        rows += [(layer, component, "weight", m, v) for m, v in values.items()]
        grad = measured.gradients.get(name) if measured.gradients else None
        if grad is not None:
            rows += [(layer, component, "grad", m, v) for m, v in grad_metrics(grad).items()]
    for layer, (output, reference) in enumerate(zip(measured.activations, final.activations, strict=True)):
        norm = torch.linalg.vector_norm(output.double(), dim=-1).mean().item()
        rows.append((layer, BLOCK, "activation", "token_norm", norm))
        rows.append((layer, BLOCK, "activation", "cka_final", linear_cka(output, reference)))
    return rows
