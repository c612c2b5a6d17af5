"""Putting the fused loss (delphi.train.loss) into a transformers `*ForCausalLM` instance's forward.

`use_fused_loss(model, enabled)` puts it into a transformers `*ForCausalLM` *instance*: its `forward`,
when training with `labels`, runs `model.base_model` and the fused loss on its last hidden state with
`model.get_output_embeddings()`; every other call (evaluation, generation, no labels) is the model's own
forward. The model is called as usual, so DDP/FSDP wrappers and their gradient hooks see a normal
forward. Weights, state dict and config are untouched: checkpoints stay plain transformers models.
Before patching, a tiny batch checks that the fused loss and every gradient equal the model's own; an
architecture that processes its logits further (soft-capping, scaling, aux losses) keeps the plain path.
"""

from __future__ import annotations

import inspect
import logging
import math
import types

import torch

from delphi.train.loss import IGNORE_INDEX, causal_lm_loss

logger = logging.getLogger("delphi.train.loss")  # the loss's own log, whichever module speaks
_warned: set[str] = set()

# Setup check: relative tolerance of the loss and of each gradient's norm against the model's own forward.
CHECK_RTOL = 1e-4
# kwargs that only the plain forward honours: with any of them set (other than to its default), a call
# takes the plain path. The Trainer passes none of them.
_PLAIN_ONLY_KWARGS = {
    "shift_labels": None,
    "ignore_index": IGNORE_INDEX,
    "logits_to_keep": 0,
    "return_dict": True,
    "cache": None,
    "past_key_values": None,
}


def _fused_forward_loss(model, input_ids, labels, chunk_rows, kwargs):
    """(loss, base model outputs) of the fused path; the same computation the patched forward runs."""
    num_items_in_batch = kwargs.pop("num_items_in_batch", None)
    outputs = model.base_model(input_ids=input_ids, **kwargs)
    hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
    head = model.get_output_embeddings()
    recorder = getattr(model, "delphi_sequence_losses", None)  # the training ledger's (ledger_capture)
    loss = causal_lm_loss(
        hidden,
        head.weight,
        labels,
        head.bias,
        num_items_in_batch=num_items_in_batch,
        chunk_rows=chunk_rows,
        recorder=recorder if recorder is not None and recorder.active else None,
    )
    return loss, outputs


def _make_forward(plain, chunk_rows):
    from transformers.modeling_outputs import CausalLMOutput

    def forward(self, *args, labels=None, **kwargs):
        if (
            labels is None
            or not self.training
            or args
            or not all(map(_is_default, kwargs.items()))
            or not _is_whole(self.get_output_embeddings().weight, type(self).__name__)
        ):
            return plain(*args, labels=labels, **kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k not in _PLAIN_ONLY_KWARGS}
        input_ids = kwargs.pop("input_ids", None)
        loss, outputs = _fused_forward_loss(self, input_ids, labels, chunk_rows, kwargs)
        return CausalLMOutput(
            loss=loss,
            logits=None,  # never materialized; evaluation and generation (no labels) get the plain forward
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )

    # the Trainer reads the forward's signature (which columns to keep, whether it takes loss kwargs):
    # keep the original one (`__signature__`, not `__wrapped__`, which accelerate's unwrap would follow)
    forward.__signature__ = inspect.signature(plain.__func__)
    forward.delphi_fused_loss = plain
    return forward


def _is_whole(weight, model_name: str) -> bool:
    """Whether the output embedding is here in full: not if FSDP shards it apart from the root module
    (its weight is then a DTensor shard, or empty, until its own forward runs): the plain path then."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without distributed support
        DTensor = ()  # noqa: N806
    whole = weight.dim() == 2 and weight.numel() > 0 and not isinstance(weight, DTensor)
    if not whole and model_name not in _warned:
        _warned.add(model_name)
        logger.warning(
            "loss: plain for %s: its output embedding is sharded apart from the model (FSDP wrapping "
            "it on its own); keep it in the root module to use the fused loss",
            model_name,
        )
    return whole


def _is_default(item) -> bool:
    key, value = item
    if key not in _PLAIN_ONLY_KWARGS or value is None:
        return True
    default = _PLAIN_ONLY_KWARGS[key]
    return type(value) is type(default) and value == default


def _accepts_loss_kwargs(model) -> bool:
    """Whether the Trainer passes `num_items_in_batch` to this model's forward (its own rule)."""
    if hasattr(model, "accepts_loss_kwargs"):
        return bool(model.accepts_loss_kwargs)
    params = inspect.signature(model.forward).parameters.values()
    return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)


def _unusable(model) -> str | None:
    """Why the fused path cannot even be tried on `model`, or None."""
    import torch.nn as nn

    if not hasattr(model, "base_model") or not hasattr(model, "get_output_embeddings"):
        return f"{type(model).__name__} is not a transformers model"
    if model.base_model is model:
        return f"{type(model).__name__} has no separate base model"
    head = model.get_output_embeddings()
    if type(head) is not nn.Linear:
        return f"{type(model).__name__}'s output embeddings are {type(head).__name__}, not nn.Linear"
    if not hasattr(model.forward, "__func__"):
        return f"{type(model).__name__}.forward is not a method"
    if "labels" not in inspect.signature(model.forward).parameters:
        return f"{type(model).__name__}.forward takes no labels"
    return None


def check_fused_loss(model, *, chunk_rows: int = 7, seq_len: int = 12) -> str | None:
    """Why the fused loss is not the model's own on a tiny random batch, or None when it is.

    Loss and every parameter's gradient are compared (in the model's train mode, with the same
    dropout masks), once with `num_items_in_batch` and once without. For the comparison the output
    embedding is temporarily replaced by a random one giving large logits, so that a soft-capping
    or scaling of the logits shows even at initialization; it is restored bit for bit. Nothing of
    the model, its gradients or the global RNG state is changed.
    """
    problem = _unusable(model)
    if problem:
        return problem
    head = model.get_output_embeddings()
    weight = head.weight
    device = weight.device
    vocab, hidden_size = weight.shape
    positions = getattr(model.config, "max_position_embeddings", None) or seq_len
    seq = max(2, min(seq_len, positions))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(vocab, model.config.vocab_size), (2, seq), generator=gen).to(device)
    labels = ids.clone()
    labels[0, seq // 2] = IGNORE_INDEX
    items = int((labels[:, 1:] != IGNORE_INDEX).sum()) + 3  # as under accumulation: more than this batch
    probe = torch.randn(weight.shape, generator=gen, dtype=torch.float32) * (4.0 / math.sqrt(hidden_size))
    params = [p for p in model.parameters() if p.requires_grad]
    saved_weight = weight.detach().clone()
    modes = [(m, m.training) for m in model.modules()]
    plain = model.forward
    cases = [{"num_items_in_batch": torch.tensor(items, device=device)}, {}]
    if not _accepts_loss_kwargs(model):
        cases = [{}]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            with torch.no_grad():
                weight.copy_(probe.to(weight.dtype))
            model.train()
            for case in cases:
                torch.manual_seed(0)
                with torch.enable_grad():
                    own = plain(input_ids=ids, labels=labels, **case).loss
                    own_grads = torch.autograd.grad(own, params, allow_unused=True)
                torch.manual_seed(0)
                with torch.enable_grad():
                    fused, _ = _fused_forward_loss(model, ids, labels, chunk_rows, dict(case))
                    fused_grads = torch.autograd.grad(fused, params, allow_unused=True)
                what = "with num_items_in_batch" if case else "as a mean"
                if not _close(fused, own):
                    return f"loss {what} {fused.item():.6g} != the model's own {own.item():.6g}"
                names = [n for n, p in model.named_parameters() if p.requires_grad]
                for name, a, b in zip(names, fused_grads, own_grads, strict=True):
                    if (a is None) != (b is None) or (a is not None and not _close(a, b)):
                        return f"gradient of {name} {what} differs from the model's own"
    except Exception as e:  # noqa: BLE001 - any failure means: keep the model's own forward
        return f"the fused path failed on a test batch: {type(e).__name__}: {e}"
    finally:
        with torch.no_grad():
            weight.copy_(saved_weight)
        for module, training in modes:
            module.training = training
    return None


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.detach().double(), b.detach().double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return False
    return bool((a - b).norm() <= CHECK_RTOL * b.norm() + 1e-12)


def is_fused(model) -> bool:
    """Whether `use_fused_loss` put the fused loss into this model instance."""
    return hasattr(model.__dict__.get("forward"), "delphi_fused_loss")


def use_fused_loss(model, enabled: bool = True, *, chunk_rows: int | None = None, check: bool = True) -> str:
    """Make `model` (a transformers *ForCausalLM) train with the fused loss; returns what is in use.

    "fused" when patched; otherwise "plain (why)". With `enabled=False` a patched model gets its own
    forward back. Unless `check=False`, the fused loss is first checked against the model's own
    (`check_fused_loss`) and the plain path kept, with one log line, when they differ. Call it before
    building the Trainer (which reads the forward's signature) and before wrapping the model.
    """
    if is_fused(model):  # back to the forward it had before
        before = model.forward.delphi_fused_loss
        del model.forward
        if model.forward != before:
            model.forward = before
    if not enabled:
        return "plain (fused_loss: false)"
    problem = _unusable(model) or (check_fused_loss(model) if check else None)
    if problem:
        logger.warning("loss: plain (the fused loss is not used for %s: %s)", type(model).__name__, problem)
        return f"plain ({problem})"
    model.forward = types.MethodType(_make_forward(model.forward, chunk_rows), model)
    how = f"chunks of {chunk_rows} rows" if chunk_rows else "chunk rows chosen per batch"
    logger.info("loss: fused linear + cross-entropy (%s; logits never held for the whole batch)", how)
    return "fused"
