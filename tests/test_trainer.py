"""DelphiTrainer end to end on a tiny Llama: schedule, checkpoint contents, determinism, resume, losses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from numerics import (
    assert_losses_agree,
    assert_weights_agree,
    check,
    summation_bound,
    threads_under_test,
)
from tiny import training_args
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    TrainerCallback,
)

from delphi.errors import DelphiError
from delphi.layout import checkpoint_dir, latest_resumable, list_checkpoints, read_checkpoint_meta
from delphi.train.data import collate_sequences, load_token_split
from delphi.train.sampler import epoch_permutation
from delphi.train.trainer import DelphiTrainer, sequence_losses

SEQ_LEN, VOCAB = 16, 64


@pytest.fixture(scope="module")
def tokenizer():
    """A real byte-level BPE tokenizer, trained on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<bos>", "<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(
        ["Once upon a time, a cat sat on a mat.", "The dog ran to the park."] * 5, trainer
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    """Random token sequences written as real parquet: 20 train, 10 validation."""
    folder = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    for split, rows in (("train", 20), ("validation", 10)):
        Dataset.from_dict({"tokens": rng.integers(0, VOCAB, (rows, SEQ_LEN)).tolist()}).to_parquet(
            folder / f"{split}-00000.parquet"
        )
    return folder


def load_data(folder):
    return {split: load_token_split(folder, split) for split in ("train", "validation")}


@pytest.fixture(scope="module")
def data(token_dir):
    return load_data(token_dir)


def tiny_llama(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        attention_dropout=dropout,
    )
    return LlamaForCausalLM(config)


def make_trainer(
    out_dir, data, tokenizer, *, model=None, steps=(), eval_data=True, callbacks=(), **overrides
):
    settings = {
        "max_steps": 6,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "per_device_eval_batch_size": 4,  # 10 eval sequences: the last eval batch is short
        "learning_rate": 1e-2,
        "logging_steps": 2,
        "seed": 1,
    }
    extra = {
        k: overrides.pop(k) for k in list(overrides) if k in ("run_files", "keep_optimizer", "data_collator")
    }
    args = training_args(out_dir, **(settings | overrides))
    return DelphiTrainer(
        model=model if model is not None else tiny_llama(),
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"] if eval_data else None,
        processing_class=tokenizer,
        checkpoint_steps=list(steps),
        seq_len=SEQ_LEN,
        callbacks=list(callbacks),
        **extra,
    )


def weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


class StopAt(TrainerCallback):
    """Stops training after `step`, like a run killed right after that step's checkpoint."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_checkpoints_at_scheduled_steps_with_everything_needed(tmp_path, data, tokenizer):
    trainer = make_trainer(tmp_path, data, tokenizer, steps=[1, 2, 4], run_files={"recipe.yaml": "seed: 1\n"})
    trainer.train()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1, 2, 4, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step1", "step2", "step4", "step6"]

    final = checkpoint_dir(tmp_path, 6)
    names = {p.name for p in final.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "recipe.yaml",
        "trainer_state.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "checkpoint.json",
    } <= names
    assert (final / "recipe.yaml").read_text() == "seed: 1\n"
    # keep_optimizer="latest": resume state only in the newest checkpoint, model weights everywhere
    for step in (1, 2, 4):
        older = {p.name for p in checkpoint_dir(tmp_path, step).iterdir()}
        assert "model.safetensors" in older and not older & {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert latest_resumable(tmp_path) == final

    loaded = AutoModelForCausalLM.from_pretrained(final)
    assert_bitwise_equal(weights(loaded), weights(trainer.model))
    assert AutoTokenizer.from_pretrained(final).get_vocab() == tokenizer.get_vocab()

    meta = read_checkpoint_meta(checkpoint_dir(tmp_path, 4))
    assert meta["step"] == 4 and meta["max_steps"] == 6
    assert meta["global_batch_size"] == 4 and meta["seq_len"] == SEQ_LEN
    assert meta["sequences_seen"] == 16 and meta["tokens_seen"] == 16 * SEQ_LEN
    assert meta["epoch"] == pytest.approx(4 / 5)  # 20 sequences / 4 per step = 5 steps per epoch
    assert meta["eval_perplexity"] == pytest.approx(math.exp(meta["eval_loss"]))
    logged = [h for h in trainer.state.log_history if h.get("step") == 4 and "loss" in h][0]
    assert meta["train_loss"] == logged["loss"] and meta["learning_rate"] == logged["learning_rate"]
    assert logged["tokens_seen"] == 16 * SEQ_LEN and logged["tokens_per_second"] > 0
    assert "grad_norm" in logged


@pytest.mark.slow
def test_keep_optimizer_all_and_none(tmp_path, data, tokenizer):
    make_trainer(tmp_path / "all", data, tokenizer, steps=[2], max_steps=3, keep_optimizer="all").train()
    assert all((folder / "optimizer.pt").exists() for _, folder in list_checkpoints(tmp_path / "all"))
    make_trainer(tmp_path / "none", data, tokenizer, steps=[2], max_steps=3, keep_optimizer="none").train()
    assert len(list_checkpoints(tmp_path / "none")) == 2
    assert latest_resumable(tmp_path / "none") is None


@pytest.mark.slow
def test_identical_runs_give_identical_weights(tmp_path, data, tokenizer):
    first = make_trainer(tmp_path / "a", data, tokenizer, model=tiny_llama(dropout=0.1))
    first.train()
    second = make_trainer(tmp_path / "b", data, tokenizer, model=tiny_llama(dropout=0.1))
    second.train()
    assert_bitwise_equal(weights(first.model), weights(second.model))
    other_data_seed = make_trainer(
        tmp_path / "c", data, tokenizer, model=tiny_llama(dropout=0.1), data_seed=7
    )
    other_data_seed.train()
    assert not torch.equal(first.model.lm_head.weight, other_data_seed.model.lm_head.weight)


@pytest.mark.slow
def test_dataloader_workers_and_drop_last_do_not_change_training(tmp_path, data, tokenizer):
    plain = make_trainer(tmp_path / "plain", data, tokenizer, eval_data=False, max_steps=3)
    plain.train()
    workers = make_trainer(
        tmp_path / "workers",
        data,
        tokenizer,
        eval_data=False,
        max_steps=3,
        dataloader_num_workers=2,
        dataloader_drop_last=True,
    )
    workers.train()
    assert_bitwise_equal(weights(workers.model), weights(plain.model))


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [3, 5, 6])  # mid-epoch, at the epoch's end (5 steps/epoch), in epoch 2
def test_resume_equals_uninterrupted(tmp_path, data, tokenizer, stop_at):
    settings = {"max_steps": 8, "steps": [3, 5, 6]}
    full = make_trainer(tmp_path / "full", data, tokenizer, model=tiny_llama(dropout=0.1), **settings)
    full.train()

    killed = make_trainer(
        tmp_path / "run",
        data,
        tokenizer,
        model=tiny_llama(dropout=0.1),
        callbacks=[StopAt(stop_at)],
        **settings,
    )
    killed.train()
    resume_from = latest_resumable(tmp_path / "run")
    assert resume_from == checkpoint_dir(tmp_path / "run", stop_at)

    # a fresh process: another initialization, everything must come from the checkpoint
    resumed = make_trainer(
        tmp_path / "run", data, tokenizer, model=tiny_llama(seed=123, dropout=0.1), **settings
    )
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8
    assert_bitwise_equal(weights(resumed.model), weights(full.model))
    full_meta = read_checkpoint_meta(checkpoint_dir(tmp_path / "full", 8))
    resumed_meta = read_checkpoint_meta(checkpoint_dir(tmp_path / "run", 8))
    assert resumed_meta["eval_loss"] == full_meta["eval_loss"]
    assert resumed_meta["train_loss"] == pytest.approx(full_meta["train_loss"], rel=1e-6)


def test_resume_refuses_what_it_cannot_continue(tmp_path, data, tokenizer):
    with pytest.raises(DelphiError, match="no resumable checkpoint"):
        make_trainer(tmp_path, data, tokenizer).train(resume_from_checkpoint=True)
    make_trainer(tmp_path, data, tokenizer, steps=[2], max_steps=3).train()
    with pytest.raises(DelphiError, match="no optimizer state"):
        make_trainer(tmp_path, data, tokenizer).train(resume_from_checkpoint=checkpoint_dir(tmp_path, 2))
    with pytest.raises(DelphiError, match="global_batch_size=4, this run has global_batch_size=8"):
        make_trainer(tmp_path, data, tokenizer, gradient_accumulation_steps=4).train(
            resume_from_checkpoint=checkpoint_dir(tmp_path, 3)
        )


@pytest.mark.slow
def test_interrupted_saves_are_ignored_and_cleaned(tmp_path, data, tokenizer):
    make_trainer(tmp_path, data, tokenizer, steps=[2], max_steps=3).train()
    # a run killed while writing step 5 and a half-copied step 4 without checkpoint.json
    (tmp_path / ".step5.tmp").mkdir()
    (tmp_path / ".step5.tmp" / "model.safetensors").write_text("partial")
    partial = tmp_path / "step4"
    partial.mkdir()
    (partial / "optimizer.pt").write_text("partial")
    (partial / "scheduler.pt").write_text("partial")
    (partial / "trainer_state.json").write_text("{}")
    assert latest_resumable(tmp_path) == checkpoint_dir(tmp_path, 3)
    make_trainer(tmp_path, data, tokenizer, steps=[2], max_steps=5).train(resume_from_checkpoint=True)
    assert not (tmp_path / ".step5.tmp").exists()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3, 5]


def test_steps_train_on_the_documented_sequences(tmp_path, data, tokenizer):
    """Step s of epoch e trains on permutation(n, data_seed, e)[s*B:(s+1)*B] (B=4, micro-batches of 2)."""
    seen = []

    def recording_collator(rows):
        batch = collate_sequences(rows)
        seen.append(batch["input_ids"])
        return batch

    trainer = make_trainer(
        tmp_path, data, tokenizer, eval_data=False, data_collator=recording_collator, max_steps=7, data_seed=3
    )
    trainer.train()
    tokens = torch.tensor(data["train"]["tokens"])
    order = np.concatenate([epoch_permutation(20, 3, 0), epoch_permutation(20, 3, 1)[:8]])
    # [:28]: the dataloader collates one micro-batch ahead of training
    assert torch.equal(torch.cat(seen)[: len(order)], tokens[order])


@pytest.mark.numerics
def test_training_loss_is_next_token_cross_entropy(tmp_path, data, tokenizer):
    """labels == input_ids and the model shifts once: the first logged loss is CE(logits[:, :-1], ids[:, 1:])."""
    model = tiny_llama()
    ids = torch.tensor(data["train"]["tokens"])[epoch_permutation(20, 1, 0)[:4]]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).item()
    # the same logits reduced along other paths: a mean over the tokens of logsumexps over the vocabulary
    bound = summation_bound(ids[:, 1:].numel() + VOCAB)
    check(
        "per-sequence losses' mean vs F.cross_entropy",
        abs(sequence_losses(logits, ids).mean().item() / expected - 1),
        bound,
    )
    with torch.no_grad():
        loss = model(**collate_sequences([{"input_ids": row.numpy()} for row in ids])).loss.item()
    check("the model's own loss vs F.cross_entropy", abs(loss / expected - 1), bound)
    trainer = make_trainer(
        tmp_path, data, tokenizer, model=model, eval_data=False, max_steps=1, logging_steps=1
    )
    trainer.train()
    first = [h for h in trainer.state.log_history if "loss" in h][0]
    # the Trainer's first logged loss: the same mean, accumulated over micro-batches
    assert first["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
@pytest.mark.numerics
def test_gradient_accumulation_matches_one_big_batch(tmp_path, data, tokenizer):
    """One step on 8 sequences: one micro-batch of 8 == 4 accumulated micro-batches of 2 (the gradients the
    optimizer is handed, read before it steps)."""
    results = []
    for micro, accumulation in ((8, 1), (2, 4)):
        recorder = GradientsBeforeStep()
        trainer = make_trainer(
            tmp_path / f"m{micro}",
            data,
            tokenizer,
            eval_data=False,
            max_steps=1,
            max_grad_norm=0.0,
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=accumulation,
            callbacks=[recorder],
        )
        trainer.train()
        results.append(recorder.gradients)
    assert all(g.abs().max() > 0 for g in results[0].values())
    # The gradient is a sum over the batch's 8 x 15 tokens, grouped otherwise. A float32 sum of n terms in
    # any order is within n eps of Σ|term| (not of the sum, which cancels: q and k's gradients at init are
    # 1e-3 of the rest), so each tensor's difference is measured against the sum of its sequences' gradient
    # magnitudes, within summation_bound(120); an accumulation defect (a factor of 4, a dropped micro-batch)
    # is off by a sizeable fraction of the gradient itself.
    per_sequence = sequence_gradients(torch.tensor(data["train"]["tokens"])[epoch_permutation(20, 1, 0)[:8]])
    magnitude = {name: sum(g.abs() for g in grads) for name, grads in per_sequence.items()}
    whole = {name: sum(grads) for name, grads in per_sequence.items()}
    bound = summation_bound(120)
    for label, got in (
        ("one batch vs its sequences summed", results[0]),
        ("accumulated vs one batch", results[1]),
    ):
        want = whole if got is results[0] else results[0]
        worst = max((got[k].double() - want[k].double()).norm() / magnitude[k].double().norm() for k in want)
        check(f"{label}: gradient, worst |diff| / |Σ|sequence gradients||", worst.item(), bound)


class GradientsBeforeStep(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def sequence_gradients(ids: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Each sequence's share of the batch's mean-loss gradient, for a fresh tiny_llama()."""
    model, tokens = tiny_llama(), ids[:, 1:].numel()
    grads = {name: [] for name, _ in model.named_parameters()}
    for row in ids:
        model.zero_grad()
        (model(input_ids=row[None], labels=row[None]).loss * (len(row) - 1) / tokens).backward()
        for name, p in model.named_parameters():
            grads[name].append(p.grad.detach().clone())
    return grads


@pytest.mark.numerics
def test_eval_loss_is_the_mean_over_every_eval_sequence(tmp_path, data, tokenizer):
    trainer = make_trainer(tmp_path, data, tokenizer, max_steps=2, per_device_eval_batch_size=4)
    trainer.train()
    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir(tmp_path, 2)).eval()
    ids = torch.tensor(data["validation"]["tokens"])  # 10 sequences: batches of 4, 4, 2
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).item()
    meta = read_checkpoint_meta(checkpoint_dir(tmp_path, 2))
    # the same mean over 10 x 15 tokens, accumulated batch by batch instead of at once
    check(
        "eval loss vs one cross-entropy over every sequence",
        abs(meta["eval_loss"] / expected - 1),
        summation_bound(ids[:, 1:].numel() + VOCAB),
    )
    # Transformers' own estimate weights the short last batch like a full one, which is measurably off
    batch_means = [
        F.cross_entropy(logits[i : i + 4, :-1].reshape(-1, VOCAB), ids[i : i + 4, 1:].reshape(-1)).item()
        for i in (0, 4, 8)
    ]
    assert abs(np.mean(batch_means) - expected) > 1e-4


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"save_strategy": "steps"}, "save_strategy"),
        ({"eval_strategy": "steps", "eval_steps": 2}, "eval_strategy"),
        ({"train_sampling_strategy": "sequential"}, "train_sampling_strategy"),
        ({"save_total_limit": 2}, "save_total_limit"),
        ({"keep_optimizer": "some"}, "keep_optimizer"),
        ({"run_files": {"../recipe.yaml": ""}}, "plain file name"),
        ({"run_files": {"checkpoint.json": ""}}, "plain file name"),
    ],
)
def test_bad_settings_are_refused_before_training(tmp_path, data, tokenizer, overrides, match):
    settings = dict(overrides)
    strategies = {k: settings.pop(k) for k in ("save_strategy", "eval_strategy") if k in settings}
    with pytest.raises(DelphiError, match=match):
        if strategies:
            args = training_args(tmp_path, **(strategies | settings))
            DelphiTrainer(
                model=tiny_llama(),
                args=args,
                train_dataset=data["train"],
                checkpoint_steps=[],
                seq_len=SEQ_LEN,
            )
        else:
            make_trainer(tmp_path, data, tokenizer, **settings)


def test_wrong_sequence_length_and_too_little_data(tmp_path, data, tokenizer):
    args = training_args(tmp_path)
    with pytest.raises(DelphiError, match="have 16 tokens, expected seq_len=32"):
        DelphiTrainer(
            model=tiny_llama(), args=args, train_dataset=data["train"], checkpoint_steps=[], seq_len=32
        )
    with pytest.raises(DelphiError, match="fewer than one global batch"):
        make_trainer(tmp_path, data, tokenizer, per_device_train_batch_size=16).train()


def test_checkpoint_json_is_valid_json_with_eval_metrics(tmp_path, data, tokenizer):
    make_trainer(tmp_path, data, tokenizer, max_steps=1).train()
    meta = json.loads((checkpoint_dir(tmp_path, 1) / "checkpoint.json").read_text())
    assert meta["eval"]["eval_loss"] == meta["eval_loss"]
    assert meta["wall_seconds"] > 0 and meta["saved_at"].endswith("+00:00")


# ---- several processes (real gloo DDP on CPU through torchrun) ----

DDP_SETTINGS = {"max_steps": 8, "steps": [3, 5, 6]}


def ddp_worker(out_dir, data_dir, micro, accumulation, stop_at, resume):
    """One torchrun process: train (or resume) and let rank 0 save the final weights."""
    torch.set_num_threads(threads_under_test())
    trainer = make_trainer(
        out_dir,
        load_data(data_dir),
        None,
        model=tiny_llama(seed=5 if resume else 0),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        callbacks=[StopAt(stop_at)] if stop_at else [],
        ddp_find_unused_parameters=False,
        **DDP_SETTINGS,
    )
    trainer.train(resume_from_checkpoint=True if resume else None)
    if trainer.args.process_index == 0:
        torch.save(weights(trainer.model), Path(out_dir) / "final.pt")


def torchrun(out_dir, data_dir, *, stop_at=0, resume=False):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [__file__, str(out_dir), str(data_dir), "1", "2", str(stop_at), str(int(resume))]
    env = os.environ | {"OMP_NUM_THREADS": str(threads_under_test())}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(Path(out_dir) / "final.pt")


@pytest.mark.slow
@pytest.mark.numerics
def test_two_processes_train_like_one_and_resume_exactly(tmp_path, token_dir, data, tokenizer):
    """Global batch 4 as 2 processes x 1 x 2 accumulation == 1 process x 2 x 2; a killed 2-process run resumes bitwise."""
    one = make_trainer(tmp_path / "one", data, tokenizer, **DDP_SETTINGS)  # micro-batch 2, accumulation 2
    one.train()
    two = torchrun(tmp_path / "two", token_dir)
    # only the reduction order differs (numerics.py: drift relative to how far training moved each tensor)
    assert_weights_agree(two, weights(one.model), weights(tiny_llama()), what="2 processes vs 1")
    meta_one = read_checkpoint_meta(checkpoint_dir(tmp_path / "one", 8))
    meta_two = read_checkpoint_meta(checkpoint_dir(tmp_path / "two", 8))
    assert_losses_agree({8: meta_two["eval_loss"]}, {8: meta_one["eval_loss"]}, what="eval loss, 2 vs 1")
    assert meta_two["global_batch_size"] == 4
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {
        p.name for p in checkpoint_dir(tmp_path / "two", 8).iterdir()
    }

    torchrun(tmp_path / "killed", token_dir, stop_at=6)  # killed in epoch 2 (5 steps per epoch)
    assert latest_resumable(tmp_path / "killed") == checkpoint_dir(tmp_path / "killed", 6)
    resumed = torchrun(tmp_path / "killed", token_dir, resume=True)
    assert_bitwise_equal(resumed, two)


if __name__ == "__main__":
    out_dir, data_dir, micro, accumulation, stop_at, resume = sys.argv[1:]
    ddp_worker(out_dir, data_dir, int(micro), int(accumulation), int(stop_at), resume == "1")
