"""The `README.md` model card of one checkpoint, built from the files the checkpoint already holds.

It depends on nothing but the folder (no clock, no host), so the same checkpoint always gives the
same card and re-publishing an unchanged checkpoint uploads nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from delphi.layout import CONFIG_FILE, META_NAME, RECIPE_FILE, RUN_CONTEXT_FILE, WEIGHTS_FILE, step_name


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _parameter_count(folder: Path, context: dict) -> int | None:
    if isinstance(context.get("parameters"), int):
        return context["parameters"]
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        return None
    from safetensors import safe_open

    total = 0
    with safe_open(str(weights), framework="numpy") as f:
        for name in f.keys():
            count = 1
            for dim in f.get_slice(name).get_shape():
                count *= dim
            total += count
    return total


def _fmt(value, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def model_card(folder: str | Path, repo_id: str, *, is_final: bool) -> str:
    """Markdown with YAML front matter: architecture, size, recipe, step, tokens, loss, how to load."""
    folder = Path(folder)
    meta = _read_json(folder / META_NAME)
    config = _read_json(folder / CONFIG_FILE)
    context = _read_json(folder / RUN_CONTEXT_FILE)
    recipe_path = folder / RECIPE_FILE
    recipe_text = recipe_path.read_text() if recipe_path.is_file() else ""
    recipe = yaml.safe_load(recipe_text) if recipe_text else {}
    step = meta.get("step")
    branch = step_name(step)
    architecture = (config.get("architectures") or ["unknown"])[0]
    parameters = _parameter_count(folder, context)
    name = (recipe or {}).get("name") or repo_id.split("/")[-1]
    front = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["delphi", config.get("model_type", "causal-lm")],
    }
    final_note = (
        "This is the final checkpoint of the run; it is also on the `main` branch.\n"
        if is_final
        else "Every checkpoint of the run is on its own branch `step{N}`; the final model is on `main`.\n"
    )
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {name}: step {step}

A `{architecture}` with {_fmt(parameters, ",")} parameters, trained with delphi. This revision
(`{branch}`) is the checkpoint after {_fmt(step)} of {_fmt(meta.get("max_steps"))} optimizer steps.

{final_note}
| | |
|---|---|
| step | {_fmt(step)} |
| tokens seen | {_fmt(meta.get("tokens_seen"), ",")} |
| sequences seen | {_fmt(meta.get("sequences_seen"), ",")} |
| validation loss | {_fmt(meta.get("eval_loss"), ".4f")} |
| validation perplexity | {_fmt(meta.get("eval_perplexity"), ".2f")} |
| train loss | {_fmt(meta.get("train_loss"), ".4f")} |
| global batch x sequence length | {_fmt(meta.get("global_batch_size"))} x {_fmt(meta.get("seq_len"))} |
| delphi | {context.get("packages", {}).get("delphi", "n/a")} |

## How to load this revision

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo_id}", revision="{branch}")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}", revision="{branch}")
```

## Recipe

The fully resolved recipe this run was trained with (`recipe.yaml` in this revision):

```yaml
{recipe_text.strip()}
```

`checkpoint.json` holds this step's metrics, `trainer_state.json` the training log so far and
`run_context.json` the package versions and hardware.
{_ledger_section(meta.get("ledger"))}"""


def _ledger_section(ledger) -> str:
    """The card's section on the run's training ledger (`checkpoint.json`'s `ledger`), or nothing."""
    if not isinstance(ledger, dict) or not ledger.get("rows"):
        return ""
    return f"""
## Training ledger

This run kept a training ledger: `{ledger.get("dir", "ledger")}/` in this revision holds
{_fmt(ledger.get("rows"), ",")} rows for steps {_fmt(ledger.get("first_step"))} to {_fmt(ledger.get("last_step"))}, one for every
sequence each optimizer step trained on: `step`, `epoch`, `index` (the sequence's row in the train split) and
`loss` (its mean next-token loss under the weights before that step's update). Parquet, one file per
checkpoint interval ({_fmt(ledger.get("bytes"), ",")} bytes); read it with
`pandas.read_parquet("{ledger.get("dir", "ledger")}")` or `delphi ledger RUN --hardest K`.
"""
