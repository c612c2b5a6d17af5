"""Sample stories from a checkpoint: a quick look at what a model (or one of its steps) writes."""

from __future__ import annotations

from pathlib import Path

from delphi.errors import DelphiError


def resolve_checkpoint(model: str | Path, revision: str | None = None) -> tuple[str, str | None]:
    """(where to load from, hub revision) for a step folder, a run directory (its `revision` step, or its
    newest complete checkpoint) or a hub repo id (see `delphi.layout.checkpoint_ref`)."""
    from delphi.layout import CONFIG_FILE, checkpoint_ref, list_checkpoints

    ref = checkpoint_ref(model, revision)
    if ref.local and ref.branch is None:
        if (Path(ref.run) / CONFIG_FILE).is_file():
            return ref.run, None  # a model folder that is not part of a run
        saved = list_checkpoints(ref.run)
        if not saved:
            raise DelphiError(f"{str(model)!r} holds no model (config.json) and no complete step checkpoints")
        return str(saved[-1][1]), None
    return ref.location


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
) -> list[str]:
    """Return `n` continuations of `prompt` (prompt included), deterministic for a given seed and device.

    The prompt is encoded after `<bos>`, as every training sequence starts; sampling stops at `<eos>`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from delphi.tokenizer import load_tokenizer

    if n < 1 or max_new_tokens < 1:
        raise DelphiError(f"need n >= 1 and max_new_tokens >= 1, got n={n}, max_new_tokens={max_new_tokens}")
    if temperature < 0:
        raise DelphiError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    where, revision = resolve_checkpoint(model, revision)
    tokenizer = load_tokenizer(where, revision=revision)
    try:
        lm = AutoModelForCausalLM.from_pretrained(where, revision=revision)
    except OSError as e:
        raise DelphiError(f"could not load a model from {where!r}: {e}") from e
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm.to(device).eval()
    ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
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
            num_return_sequences=n,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return [tokenizer.decode(row[1:], skip_special_tokens=True) for row in out]
