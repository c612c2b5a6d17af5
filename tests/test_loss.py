"""The fused linear + cross-entropy loss (delphi.train.loss): same loss and gradients as the plain path on real
tiny Llama and Mamba models, under accumulation, autocast, DDP and the Trainer; far less memory."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from numerics import (
    EPS32,
    assert_losses_agree,
    check,
    max_relative,
    summation_bound,
    threads_under_test,
    worst_tensor_relative,
)
from tiny import training_args, write_recipe
from transformers import AutoModelForCausalLM

from delphi.errors import DelphiError
from delphi.models import build_model
from delphi.recipe import load_recipe
from delphi.train.data import load_token_split
from delphi.train.fused_forward import check_fused_loss, is_fused, use_fused_loss
from delphi.train.loss import causal_lm_loss, chunk_rows_for, fused_linear_cross_entropy
from delphi.train.trainer import DelphiTrainer

REPO = Path(__file__).resolve().parents[1]
VOCAB = 384
LLAMA = {
    "architecture": "LlamaForCausalLM",
    "vocab_size": VOCAB,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_hidden_layers": 2,
    "max_position_embeddings": 64,
}
MAMBA = {"architecture": "MambaForCausalLM", "vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 2}
# Gemma 2 soft-caps its logits (tanh(logits / 30) * 30) before the loss: the fused loss must not be used
GEMMA2 = {
    "architecture": "Gemma2ForCausalLM",
    "vocab_size": VOCAB,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 8,
    "num_hidden_layers": 1,
    "max_position_embeddings": 64,
}
# Fused vs plain in fp32: both sum the same float32 products over the vocabulary and over the batch's
# tokens (the output embedding's gradient is a sum over every token), in another order (chunks of rows,
# logits never materialised). A float32 sum of n terms in any order is within n eps of the exact one, so
# loss and gradients agree relative to their size within summation_bound(tokens of a batch): 4.8e-5 for
# batch() (measured: under 4e-7 on every CPU kernel level); a real defect (a wrong scale, a missed chunk,
# another shift) is off by 1e-2 or more.
RTOL = summation_bound(4 * 50)


def batch(rows=4, seq=50, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (rows, seq), generator=g)
    labels = ids.clone()
    labels[1, 5:9] = -100  # ignored tokens, as a collator that masks some would give
    return ids, labels


def loss_and_grads(model, ids, labels, **kwargs):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=labels, **kwargs).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same(fused, plain, rtol=RTOL):
    (loss_f, grads_f), (loss_p, grads_p) = fused, plain
    check("fused vs plain: loss, relative", abs(loss_f - loss_p).item() / abs(loss_p).item(), rtol)
    assert grads_f.keys() == grads_p.keys()
    assert all(gp.abs().max() > 0 for gp in grads_p.values())
    check(
        "fused vs plain: gradients, worst tensor's relative L2", worst_tensor_relative(grads_f, grads_p), rtol
    )
    worst = max(max_relative(grads_f[name], gp) for name, gp in grads_p.items())
    check("fused vs plain: gradients, worst max|diff| / max|grad|", worst, rtol)


def plain_and_fused(section, seed=0, chunk_rows=37):
    plain, fused = build_model(section, seed=seed), build_model(section, seed=seed)
    assert use_fused_loss(fused, True, chunk_rows=chunk_rows) == "fused"
    plain.train()
    fused.train()
    return plain, fused


@pytest.mark.numerics
@pytest.mark.parametrize("section", [LLAMA, MAMBA], ids=["llama", "mamba"])
@pytest.mark.parametrize("num_items", [None, 400], ids=["mean", "num_items_in_batch"])
def test_loss_and_every_gradient_equal_the_plain_path(section, num_items):
    """4 x 50 rows in chunks of 37 (the last chunk short), with ignored labels."""
    plain, fused = plain_and_fused(section)
    ids, labels = batch()
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    out = fused(input_ids=ids, labels=labels, **kwargs)
    assert out.logits is None  # never materialized
    assert_same(loss_and_grads(fused, ids, labels, **kwargs), loss_and_grads(plain, ids, labels, **kwargs))


@pytest.mark.numerics
@pytest.mark.parametrize("section", [LLAMA, MAMBA], ids=["llama", "mamba"])
def test_gradient_accumulation_equals_the_plain_path(section):
    """Three micro-batches, each normalized by the tokens of all three (as the Trainer does)."""
    plain, fused = plain_and_fused(section, chunk_rows=64)
    micro = [batch(rows=2, seq=40, seed=s) for s in range(3)]
    total = sum(int((labels[:, 1:] != -100).sum()) for _, labels in micro)
    results = []
    for model in (fused, plain):
        model.zero_grad(set_to_none=True)
        loss = 0.0
        for ids, labels in micro:
            step = model(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(total)).loss
            step.backward()
            loss += step.detach()
        results.append((loss, {name: p.grad.clone() for name, p in model.named_parameters()}))
    assert_same(*results)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 150, 151, 1000])
def test_chunks_that_do_not_divide_the_rows(chunk_rows):
    """The op alone against F.cross_entropy on 150 rows, with a bias and a chunk of only ignored rows."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(150, 24, generator=g, dtype=torch.float64).requires_grad_()
    weight = (torch.randn(97, 24, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    bias = torch.randn(97, generator=g, dtype=torch.float64).requires_grad_()
    targets = torch.randint(0, 97, (150,), generator=g)
    targets[:10] = -100
    targets[140:] = -100
    for num_items in (None, 1000):
        fused = fused_linear_cross_entropy(
            hidden, weight, targets, bias, num_items_in_batch=num_items, chunk_rows=chunk_rows
        )
        plain = F.cross_entropy(
            F.linear(hidden, weight, bias), targets, reduction="mean" if num_items is None else "sum"
        )
        plain = plain if num_items is None else plain / num_items
        grads_f = torch.autograd.grad(fused * 3.0, (hidden, weight, bias))  # grad_output 3 scales all
        grads_p = torch.autograd.grad(plain * 3.0, (hidden, weight, bias))
        torch.testing.assert_close(fused, plain, rtol=1e-12, atol=0)
        for a, b in zip(grads_f, grads_p, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_causal_shift_is_transformers_for_causal_lm_loss():
    for_causal_lm_loss = build_model(LLAMA).loss_function  # transformers' ForCausalLMLoss
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 11, 8, generator=g)
    weight = torch.randn(50, 8, generator=g)
    labels = torch.randint(0, 50, (3, 11), generator=g)
    labels[2, 4] = -100
    for kwargs in ({}, {"num_items_in_batch": torch.tensor(40)}):
        expected = for_causal_lm_loss(hidden @ weight.T, labels, vocab_size=50, **kwargs)
        torch.testing.assert_close(causal_lm_loss(hidden, weight, labels, chunk_rows=5, **kwargs), expected)


@pytest.mark.numerics
def test_bf16_autocast_follows_the_plain_path():
    """Under autocast the projection runs in bf16 and the loss in fp32, as in the plain path."""
    plain, fused = plain_and_fused(LLAMA)
    ids, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = [loss_and_grads(m, ids, labels) for m in (fused, plain)]
    (loss_f, grads_f), (loss_p, grads_p) = results
    # bf16 keeps 8 bits of mantissa (eps 7.8e-3); both paths round the projection's inputs and products to
    # bf16, at different places (a chunk of rows, or all at once), so the gradients that flow back through
    # it differ by a few bf16 roundings (4 eps: 3.1e-2; measured 2.4e-3) and the fp32 loss by far less
    bf16_eps = torch.finfo(torch.bfloat16).eps
    check("bf16 fused vs plain: loss, relative", abs(loss_f - loss_p).item() / loss_p.item(), bf16_eps / 4)
    assert all(g.dtype == torch.float32 for g in grads_f.values())
    worst = worst_tensor_relative(grads_f, grads_p)
    check("bf16 fused vs plain: gradients, worst tensor's relative L2", worst, 4 * bf16_eps)


def test_only_training_with_labels_takes_the_fused_path():
    """Evaluation, generation and calls without labels run the model's own forward (logits and all)."""
    plain, fused = plain_and_fused(LLAMA)
    ids, labels = batch()
    assert fused(input_ids=ids).logits is not None  # training, no labels
    for model in (plain, fused):
        model.eval()
    out_f, out_p = fused(input_ids=ids, labels=labels), plain(input_ids=ids, labels=labels)
    assert torch.equal(out_f.logits, out_p.logits) and torch.equal(out_f.loss, out_p.loss)
    generated = [m.generate(ids[:1, :5], max_new_tokens=6, do_sample=False) for m in (fused, plain)]
    assert torch.equal(*generated)


def test_the_model_stays_a_plain_transformers_model(tmp_path):
    """Same state dict, config and saved files; `enabled=False` gives the class's forward back."""
    plain, fused = plain_and_fused(LLAMA)
    assert is_fused(fused) and not is_fused(plain)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    fused.save_pretrained(tmp_path / "f")
    plain.save_pretrained(tmp_path / "p")
    assert (tmp_path / "f" / "config.json").read_text() == (tmp_path / "p" / "config.json").read_text()
    assert (tmp_path / "f" / "model.safetensors").read_bytes() == (
        tmp_path / "p" / "model.safetensors"
    ).read_bytes()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "f")
    assert not is_fused(loaded)
    assert use_fused_loss(fused, False) == "plain (fused_loss: false)"
    assert not is_fused(fused) and "forward" not in fused.__dict__


def test_setup_check_leaves_weights_gradients_and_rng_alone():
    model = build_model(MAMBA, seed=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.eval()
    rng = torch.get_rng_state()
    assert check_fused_loss(model) is None
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training and all(p.grad is None for p in model.parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_softcapped_logits_keep_the_plain_path(caplog):
    """Gemma 2's soft-capping changes the loss: the setup check sees it and says so in one line."""
    model = build_model(GEMMA2, seed=0)
    assert model.config.final_logit_softcapping
    with caplog.at_level(logging.INFO, logger="delphi.train.loss"):
        used = use_fused_loss(model, True)
    assert used.startswith("plain (loss with num_items_in_batch") and "the model's own" in used
    assert not is_fused(model)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "Gemma2ForCausalLM" in record.getMessage()
    model.config.final_logit_softcapping = None  # without it, Gemma 2's loss is the plain one
    assert use_fused_loss(model, True) == "fused"


def test_a_model_without_base_model_or_linear_head_keeps_the_plain_path():
    model = build_model(LLAMA, seed=0)
    model.lm_head = torch.nn.Sequential(model.lm_head)
    assert "not nn.Linear" in use_fused_loss(model, True)
    assert not is_fused(model)


def test_chunk_rows_policy():
    assert chunk_rows_for(64 * 512, 84, 4096) == 1024  # llama2-1m at 64 x 512: 16 MiB of fp32 logits
    assert chunk_rows_for(256 * 512, 704, 4096) == 8192  # llama2-50m: capped at 2**25 logits
    assert chunk_rows_for(100, 16, 4096) == 100
    assert chunk_rows_for(10**6, 8, 2**26) == 1


def saved_bytes(model, ids, labels):
    """Bytes of the distinct storages autograd keeps from forward to backward, and the largest one."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    return sum(storages.values()), max(storages.values())


def test_no_logits_are_kept_for_backward():
    """What a step holds between forward and backward: the plain path keeps batch x seq x vocab logits."""
    section = {**LLAMA, "vocab_size": 4096}
    plain, fused = plain_and_fused(section, chunk_rows=None)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4096, (16, 64), generator=g)
    logits_bytes = ids.numel() * 4096 * 4
    total_p, largest_p = saved_bytes(plain, ids, ids)
    total_f, largest_f = saved_bytes(fused, ids, ids)
    assert largest_p >= logits_bytes  # the measurement sees the logits
    assert largest_f <= 4096 * 16 * 4  # nothing larger than the output embedding's gradient
    assert total_f <= total_p - 0.9 * logits_bytes, (total_f, total_p)  # the rest: activations of both


# ---------------------------------------------------------------- through the Trainer, DDP, processes


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    for split, rows in (("train", 24), ("validation", 8)):
        Dataset.from_dict({"tokens": rng.integers(0, VOCAB, (rows, 24)).tolist()}).to_parquet(
            folder / f"{split}-00000.parquet"
        )
    return folder


def train_tiny(out_dir, data_dir, *, fused, micro=2, accumulation=2, steps=4, **settings):
    """A real DelphiTrainer run; returns (per-step losses, final weights, the trainer)."""
    model = build_model(LLAMA, seed=0)
    use_fused_loss(model, fused)
    args = training_args(
        out_dir,
        max_steps=steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        optim="sgd",  # weights move with the gradients alone (Adam magnifies differences of ~0 gradients)
        learning_rate=0.5,
        logging_steps=1,
        seed=1,
        **settings,
    )
    trainer = DelphiTrainer(
        model=model,
        args=args,
        train_dataset=load_token_split(data_dir, "train"),
        eval_dataset=load_token_split(data_dir, "validation"),
        checkpoint_steps=[],
        seq_len=24,
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}, trainer


@pytest.mark.slow
@pytest.mark.numerics
def test_trainer_with_accumulation_trains_like_the_plain_path(tmp_path, token_dir):
    """The Trainer treats the patched forward as the model's own (num_items_in_batch, columns kept)."""
    plain_losses, plain_weights, plain = train_tiny(tmp_path / "p", token_dir, fused=False)
    fused_losses, fused_weights, fused = train_tiny(tmp_path / "f", token_dir, fused=True)
    assert fused.model_accepts_loss_kwargs and plain.model_accepts_loss_kwargs
    assert is_fused(fused.model)
    assert len(fused_losses) == 4
    assert_fused_trains_like_plain(fused_losses, fused_weights, plain_losses, plain_weights)
    evals = {"fused": fused.evaluate()["eval_loss"], "plain": plain.evaluate()["eval_loss"]}
    check(
        "fused vs plain: eval loss after training, relative", abs(evals["fused"] / evals["plain"] - 1), RTOL
    )


def assert_fused_trains_like_plain(fused_losses, fused_weights, plain_losses, plain_weights, steps=4):
    """SGD steps (the weights move with the gradients alone, no Adam normalisation): each step's loss within
    RTOL, and each tensor's distance between the two runs within RTOL of how far it moved, plus what storing
    the weights in float32 costs: each step rounds every weight to eps of its size, whatever the gradient
    (q and k barely move in 4 steps, so that rounding is most of their difference)."""
    assert_losses_agree(dict(enumerate(fused_losses)), dict(enumerate(plain_losses)), tolerance=RTOL)
    start = {k: v.detach().double() for k, v in build_model(LLAMA, seed=0).named_parameters()}
    worst = 0.0
    for name, plain in plain_weights.items():
        plain = plain.double()
        apart, moved = (fused_weights[name].double() - plain).norm(), (plain - start[name]).norm()
        worst = max(worst, (apart / (RTOL * moved + 2 * steps * EPS32 * plain.norm())).item())
    check(
        "fused vs plain: weights, worst |diff| / (RTOL x movement + a float32 rounding per step)", worst, 1.0
    )


def ddp_worker(out_dir, data_dir, fused):
    torch.set_num_threads(threads_under_test())
    losses, weights, trainer = train_tiny(
        out_dir, data_dir, fused=fused, micro=2, accumulation=2, steps=4, ddp_find_unused_parameters=False
    )
    rank = trainer.args.process_index
    torch.save(weights, Path(out_dir) / f"final{rank}.pt")
    if rank == 0:
        (Path(out_dir) / "losses.json").write_text(json.dumps(losses))


@pytest.mark.slow
@pytest.mark.numerics
def test_two_process_ddp_same_losses_fused_or_not(tmp_path, token_dir):
    """2 gloo processes (torchrun): gradients are still all-reduced (both ranks end equal), losses match."""
    results = {}
    for fused in (False, True):
        out = tmp_path / f"fused{int(fused)}"
        out.mkdir()
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        command += [__file__, "ddp", str(out), str(token_dir), str(int(fused))]
        env = os.environ | {"OMP_NUM_THREADS": str(threads_under_test()), "PYTHONPATH": str(REPO)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rank0, rank1 = torch.load(out / "final0.pt"), torch.load(out / "final1.pt")
        for name in rank0:
            assert torch.equal(rank0[name], rank1[name]), name
        results[fused] = json.loads((out / "losses.json").read_text()), rank0
    (plain_losses, plain_weights), (fused_losses, fused_weights) = results[False], results[True]
    assert len(plain_losses) == 4
    assert_fused_trains_like_plain(fused_losses, fused_weights, plain_losses, plain_weights)


@pytest.mark.slow
def test_recipe_switch_and_train_log(stories_data, tmp_path, caplog):
    """`fused_loss` is on by default; off gives the plain path; a run may resume with it changed."""
    from delphi.train.run import train

    recipe_file = write_recipe(
        tmp_path / "r.yaml", stories_data, tmp_path / "run", **{"training.max_steps": 2}
    )
    assert load_recipe([recipe_file]).fused_loss is True
    with pytest.raises(DelphiError, match="fused_loss in --set fused_loss=fast is 'fast'; expected bool"):
        load_recipe([recipe_file], ["fused_loss=fast"])
    keep = ["checkpoints.steps=[1]", "checkpoints.keep_optimizer=all"]
    with caplog.at_level(logging.INFO, logger="delphi.train"):
        train(load_recipe([recipe_file], keep))
    assert "loss: fused linear + cross-entropy" in caplog.text
    shutil.rmtree(tmp_path / "run" / "step2")  # as if stopped after step 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="delphi.train"):
        summary = train(load_recipe([recipe_file], [*keep, "fused_loss=false"]))
    assert "loss: fused" not in caplog.text
    assert "resuming from" in caplog.text and summary["checkpoints"][:2] == [1, 2]  # not "a different run"


@pytest.mark.slow
def test_peak_memory_of_a_step_is_bounded(tmp_path):
    """The benchmark, small: peak resident memory of a real step, each path in a fresh process."""
    recipe = tmp_path / "wide.yaml"  # a model whose step is mostly logits: vocab 8192, hidden 32
    recipe.write_text(
        json.dumps(
            {
                "model": {
                    **LLAMA,
                    "vocab_size": 8192,
                    "hidden_size": 32,
                    "num_hidden_layers": 1,
                    "max_position_embeddings": 256,
                },
                "tokenizer": "unused",
                "data": {"path": "unused"},
                "seq_len": 256,
                "batch_size": 16,
            }
        )
    )
    out = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "benchmarks" / "fused_loss.py"), "--model", str(recipe)]
    command += ["--batch", "16", "--steps", "1", "--rounds", "1", "--threads", "1", "--json", str(out)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=os.environ | {"PYTHONPATH": str(REPO)}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    plain = result["runs"]["plain"][0]["step_peak_bytes"]
    assert plain >= 3 * 16 * 256 * 8192 * 4  # several copies of the 128 MiB of logits
    assert result["memory_ratio"] < 0.25, result["memory_ratio"]


def fsdp_worker(out_dir, head_apart):
    """FSDP2 (fully_shard) over 2 gloo processes: each layer and the root sharded, the head with the root
    or on its own. Gradients (gathered) against one unsharded model on both ranks' batches."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    torch.set_num_threads(threads_under_test())
    rank = dist.get_rank()
    model, whole = build_model(LLAMA, seed=0), build_model(LLAMA, seed=0)
    used = use_fused_loss(model, True)
    for layer in model.model.layers:
        fully_shard(layer)
    if head_apart:
        fully_shard(model.lm_head)
    fully_shard(model)
    model.train()
    whole.train()
    batches = [batch(rows=2, seq=30, seed=r)[0] for r in range(2)]
    out = model(input_ids=batches[rank], labels=batches[rank])
    out.loss.backward()
    (sum(whole(input_ids=ids, labels=ids).loss for ids in batches) / 2).backward()
    errors = {
        name: ((p.grad.full_tensor() - q.grad).norm() / q.grad.norm()).item()
        for (name, p), q in zip(model.named_parameters(), whole.parameters(), strict=True)
    }
    result = {"used": used, "logits": out.logits is not None, "errors": errors}
    (Path(out_dir) / f"fsdp{rank}.json").write_text(json.dumps(result))
    from delphi.train.distributed import end_processes

    end_processes()  # meet, then destroy the group: gloo can abort at exit otherwise ("terminate called ...")


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("head_apart", [False, True], ids=["head-in-root", "head-apart"])
def test_fsdp2_gradients_equal_an_unsharded_model(tmp_path, head_apart):
    """With the head in the root FSDP unit (accelerate's transformer-based wrapping) the fused loss runs;
    with the head sharded on its own it cannot see the whole weight, and the plain path runs instead."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [__file__, "fsdp", str(tmp_path), str(int(head_apart))]
    env = os.environ | {"OMP_NUM_THREADS": str(threads_under_test()), "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert ("sharded apart from the model" in done.stderr) == head_apart
    for rank in range(2):
        result = json.loads((tmp_path / f"fsdp{rank}.json").read_text())
        assert result["used"] == "fused" and result["logits"] == head_apart
        check("FSDP2 vs unsharded: gradients, worst relative error", max(result["errors"].values()), RTOL)


if __name__ == "__main__":
    if sys.argv[1] == "fsdp":
        fsdp_worker(sys.argv[2], sys.argv[3] == "1")
    else:
        ddp_worker(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
