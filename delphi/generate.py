"""Sample stories from a checkpoint: a quick look at what a model (or one of its steps) writes."""

from __future__ import annotations

import math
from pathlib import Path

from delphi.api import load, resolve
from delphi.devices import resolve_device
from delphi.errors import DelphiError


def resolve_checkpoint(model: str | Path, revision: str | None = None) -> tuple[str, str | None]:
    """(where to load from, hub revision): `delphi.api.resolve`, the rule every command shares."""
    return resolve(model, revision)


def check_sampling(n: int, max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    """The sampling options, checked before anything is loaded (one DelphiError naming the bad value)."""
    if n < 1:
        raise DelphiError(f"-n {n}: expected the number of samples, an integer >= 1")
    if max_new_tokens < 1:
        raise DelphiError(f"--max-new-tokens {max_new_tokens}: expected an integer >= 1")
    if not math.isfinite(temperature) or temperature < 0:
        raise DelphiError(f"--temperature {temperature}: expected a number >= 0 (0 = greedy)")
    if top_k is not None and top_k < 1:
        raise DelphiError(f"--top-k {top_k}: expected an integer >= 1 (sample from the k most likely tokens)")


def generate(
    model: str | Path,
    *,
    prompt: str = "Once upon a time",
    n: int = 1,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    revision: str | None = None,
    device: str | None = None,
) -> list[str]:
    """Return `n` continuations of `prompt` (prompt included), deterministic for a given seed and device.

    The prompt is encoded after `<bos>`, as every training sequence starts, and as text (a literal
    `<eos>` in it is characters, as in a training document); sampling stops at `<eos>`.
    `temperature=0` is greedy decoding: it has one continuation, so one is returned whatever `n`.
    `device` defaults to cuda when there is a GPU, else cpu.
    """
    check_sampling(n, max_new_tokens, temperature, top_k)
    device = resolve_device(device)
    lm, tokenizer = load(model, revision, device=device)

    import torch

    # the prompt is the start of a document, so text: a literal `<eos>` in it is not the special token
    prompt_ids = tokenizer(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    ids = [tokenizer.bos_token_id] + prompt_ids
    input_ids = torch.tensor([ids], device=device)
    sampling = temperature > 0
    torch.manual_seed(seed)
    with torch.no_grad():
        out = lm.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_k=top_k if sampling else None,
            top_p=None,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n if sampling else 1,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return [tokenizer.decode(row[1:], skip_special_tokens=True) for row in out]
