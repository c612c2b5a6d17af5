"""delphi's checkpoints in the tools of the field: TransformerLens, nnsight and lm-evaluation-harness.

Each tool loads real step folders (and, for lm-evaluation-harness, a branch on the local hub server) of tiny
runs trained here, and must see what transformers sees. The tools are the `interp` extra: `make test-interp`
installs them into .venv-interp and runs this file; where a tool is not installed its test is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from tiny import MAMBA_MODEL, MODEL, train_two_steps

pytestmark = pytest.mark.slow  # trains two runs

# `make test-interp` sets this: there a tool that is missing fails its test instead of skipping it
REQUIRED = os.environ.get("DELPHI_INTERP_TOOLS") == "1"


def needs(module: str):
    """Skip (before the runs are trained) where `module` is not installed, unless the tools are required."""
    return pytest.mark.skipif(
        not REQUIRED and importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed: `make test-interp` installs the interp extra into .venv-interp",
    )


TEXT = "Once upon a time, a little cat named Tom found a red ball."
MAMBA = MAMBA_MODEL


@pytest.fixture(scope="module")
def runs(stories_data, tmp_path_factory) -> dict[str, Path]:
    """Two tiny runs (a 2-layer Llama, a Mamba) with checkpoints step1 and step2: run name -> out_dir."""
    root = tmp_path_factory.mktemp("interp")
    models = {"llama": {**MODEL, "num_hidden_layers": 2}, "mamba": MAMBA}
    return {name: train_two_steps(stories_data, root, name, model) for name, model in models.items()}


def _transformers_view(folder: Path, layers: str):
    """What transformers itself computes for TEXT after <bos>: input ids, logits, and the output (residual
    stream) of the first block, read with a plain forward hook."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(TEXT).input_ids]])
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    seen = {}
    block = model.get_submodule(layers)[0]
    handle = block.register_forward_hook(
        lambda m, i, out: seen.update(block=out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    handle.remove()
    return ids, logits, seen["block"]


@needs("transformer_lens")
def test_transformer_lens_bridge_gives_transformers_logits_and_hooks_the_residual_stream(runs):
    from transformer_lens.model_bridge import TransformerBridge

    folder = runs["llama"] / "step2"
    ids, logits, block0 = _transformers_view(folder, "model.layers")
    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")

    seen = []

    def keep(resid, hook):
        seen.append(resid.detach().clone())

    def erase(resid, hook):
        return torch.zeros_like(resid)

    with torch.no_grad():
        bridge_logits = bridge(ids)
        bridge.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_post", keep)])
        erased = bridge.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_post", erase)])
        _, cache = bridge.run_with_cache(ids)
    # The same weights and the same torch kernels in one process; the bridge runs the model through its own
    # components, which may order float32 operations differently: logits of size ~1 then differ by a few
    # float32 ulps (measured: 3e-8). 1e-5 allows that; another model or a misread config moves them by 1e-2.
    assert (bridge_logits - logits).abs().max().item() <= 1e-5
    assert len(seen) == 1 and (seen[0] - block0).abs().max().item() <= 1e-5
    assert (cache["blocks.0.hook_resid_post"] - block0).abs().max().item() <= 1e-5
    assert (erased - logits).abs().max().item() > 1e-3  # the hook acts on the live stream, not on a copy


@pytest.mark.parametrize(("run", "layers"), [("llama", "model.layers"), ("mamba", "backbone.layers")])
@pytest.mark.parametrize("how", ["tokenizer", "dispatch"])
@needs("nnsight")
def test_nnsight_traces_a_checkpoint_and_reads_a_layer_output(runs, run, layers, how):
    from nnsight import (
        TransformersModel,
    )  # nnsight 0.8's name; LanguageModel (deprecated) takes the same arguments
    from transformers import AutoTokenizer

    folder = runs[run] / "step2"
    ids, logits, block0 = _transformers_view(folder, layers)
    # nnsight 0.8.1's lazy mode needs the tokenizer handed over, or dispatch=True (README: any model folder)
    kwargs = (
        {"tokenizer": AutoTokenizer.from_pretrained(folder)} if how == "tokenizer" else {"dispatch": True}
    )
    lm = TransformersModel(str(folder), task="text-generation", **kwargs)
    with torch.no_grad(), lm.trace(ids):
        output = lm.get(layers)[0].output.save()
        traced_logits = lm.output.logits.save()
    output = output[0] if isinstance(output, tuple) else output
    # nnsight runs transformers' own modules on the same input in the same process: the same numbers, bit for bit
    assert torch.equal(output, block0)
    assert torch.equal(traced_logits, logits)


TASKS = {
    # perplexity over whole documents (TinyStories' natural benchmark): windows start with the prefix token, <bos>
    "delphi_stories": {
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{story}}",
        "metric_list": [{"metric": "word_perplexity"}, {"metric": "bits_per_byte"}],
    },
    # a continuation scored after a context (the form of most benchmarks)
    "delphi_pairs": {
        "output_type": "loglikelihood",
        "doc_to_text": "{{context}}",
        "doc_to_target": "{{continuation}}",
        "target_delimiter": "",
        "metric_list": [{"metric": "acc"}],
    },
}
STORIES = ["Tom had a red ball. He was happy.", "Sara saw a big dog in the park."]
PAIRS = [("Tom had a red", " ball"), ("Sara saw a big dog in", " the park.")]


def _write_tasks(root: Path) -> Path:
    """Two lm-evaluation-harness tasks as local YAML files over local JSON lines (no hub dataset)."""
    import yaml

    data = {
        "delphi_stories": [{"story": s} for s in STORIES],
        "delphi_pairs": [{"context": c, "continuation": t} for c, t in PAIRS],
    }
    for name, task in TASKS.items():
        rows = root / f"{name}.jsonl"
        rows.write_text("".join(json.dumps(row) + "\n" for row in data[name]))
        spec = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(rows)}}}
        (root / f"{name}.yaml").write_text(yaml.safe_dump({**spec, "test_split": "test", **task}))
    return root


def _direct_loglikelihoods(folder: Path) -> dict[str, list[float]]:
    """Each request's log-likelihood computed with transformers alone, after <bos> as delphi trains."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()

    def score(context: str, target: str) -> float:
        context_ids = tokenizer(context).input_ids if context else []
        target_ids = tokenizer(context + target).input_ids[len(context_ids) :]
        ids = torch.tensor([[tokenizer.bos_token_id, *context_ids, *target_ids]])
        with torch.no_grad():
            logprobs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        picked = logprobs[len(context_ids) :].gather(-1, torch.tensor(target_ids)[:, None])
        return picked.sum().item()

    return {
        "delphi_stories": [score("", s) for s in STORIES],
        "delphi_pairs": [score(c, t) for c, t in PAIRS],
    }


def _lm_eval(model_args: str, task: str, tasks_dir: Path) -> list[float]:
    """The log-likelihood lm-evaluation-harness gives each request of `task`, in document order."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=[task],
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
        batch_size=1,
        device="cpu",
        bootstrap_iters=0,
        log_samples=True,
    )
    responses = [s["resps"][0][0] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]
    # loglikelihood answers (log-likelihood, is_greedy); loglikelihood_rolling the log-likelihood alone
    return [float(r[0] if isinstance(r, (list, tuple)) else r) for r in responses]


# lm-evaluation-harness runs the same model on the same tokens in the same process; it may sum a request's ~10
# float32 log-probabilities (each ~10) in another order: float32's ulp at 100 is 7.6e-6, so 1e-4 covers any
# order, while a missing <bos> or another checkpoint moves a log-likelihood by 1e-2 or more.
LOGLIKELIHOOD_ATOL = 1e-4


@needs("lm_eval")
@pytest.mark.parametrize("where", ["step folder", "hub branch"])
def test_lm_eval_scores_a_checkpoint_as_delphi_trains(runs, hub_server, tmp_path, where):
    """Both kinds of task score every token after <bos>, as delphi's training sequences have it: perplexity
    tasks as they are (each window starts with lm-evaluation-harness's prefix token, the tokenizer's <bos>),
    context/continuation tasks with add_bos_token=True (delphi's tokenizer adds no special token itself)."""
    tasks_dir = _write_tasks(tmp_path)
    folder = runs["llama"] / "step1"
    expected = _direct_loglikelihoods(folder)
    pretrained = f"pretrained={folder}"
    if where == "hub branch":
        from delphi.hub.push import push_run

        push_run(runs["llama"], "org/llama")
        pretrained = "pretrained=org/llama,revision=step1"
    for task, model_args in (
        ("delphi_stories", pretrained),
        ("delphi_pairs", f"{pretrained},add_bos_token=True"),
    ):
        scores = _lm_eval(model_args, task, tasks_dir)
        assert scores == pytest.approx(expected[task], abs=LOGLIKELIHOOD_ATOL, rel=0), (task, model_args)
