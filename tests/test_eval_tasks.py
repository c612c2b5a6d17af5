"""delphi's built-in lm-evaluation-harness tasks: bits per byte agrees with delphi's own validation loss on the
same text, and the minimal pairs are deterministic, numerous, and differ in one word."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from numerics import EPS32, check
from tiny import ENV, MODEL

from delphi.evaluate.minimal_pairs import PER_PHENOMENON, PHENOMENA, minimal_pairs

WIDE_CONTEXT = {**MODEL, "max_position_embeddings": 512}


def test_minimal_pairs_are_deterministic_many_and_differ_in_one_word():
    pairs = minimal_pairs()
    assert len(pairs) >= 500
    assert Counter(p["phenomenon"] for p in pairs) == {name: PER_PHENOMENON for name in PHENOMENA}
    assert len({(p["sentence_good"], p["sentence_bad"]) for p in pairs}) == len(pairs)
    for pair in pairs:
        good, bad = pair["sentence_good"].split(), pair["sentence_bad"].split()
        assert len(good) == len(bad) and sum(g != b for g, b in zip(good, bad, strict=True)) == 1, pair
    articles = [p for p in pairs if p["phenomenon"] == "article"]
    assert sum(" an " in p["sentence_good"] for p in articles) == len(articles) // 2  # always "a" scores 50%
    # the same pairs in another interpreter with another string-hash seed
    code = "import json; from delphi.evaluate.minimal_pairs import minimal_pairs; print(json.dumps(minimal_pairs()))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        env={**ENV, "PYTHONHASHSEED": "123"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(other.stdout) == pairs


def test_every_word_of_the_grammatical_sentences_is_in_the_corpus():
    """A model trained on `delphi corpus` has seen each word the pairs test it on."""
    from delphi.data.stories import generate_stories

    corpus = set(re.findall(r"[A-Za-z']+", " ".join(generate_stories(3000))))
    words = {w for p in minimal_pairs() for w in re.findall(r"[A-Za-z']+", p["sentence_good"])}
    assert words <= corpus, sorted(words - corpus)


@pytest.fixture(scope="module")
def wide_run(stories_data, tmp_path_factory) -> Path:
    from test_logprobs import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("bpb"), stories_data, "wide-context", model=WIDE_CONTEXT)


@pytest.mark.slow
@pytest.mark.numerics
def test_bits_per_byte_agrees_with_delphis_validation_loss_on_the_same_text(wide_run, tmp_path):
    """delphi_bpb = sum over stories of -log p(story tokens | <bos>) in nats / ln 2 / UTF-8 bytes.

    delphi's validation loss on the same text: each story as a sequence `<bos> + its tokens` (how every
    delphi training sequence starts; no `<eos>`, which the harness does not score either), scored with the
    loss function DelphiTrainer evaluates with (`sequence_losses`: the mean next-token cross-entropy of a
    sequence), times its number of predicted tokens for the sum in nats. Each story is shorter than the
    model's context (512), so the harness scores it in one window after its prefix token (<bos>), the same
    positions delphi scores.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from delphi.evaluate.sweep import Options, run_sweep
    from delphi.evaluate.tasks.delphi_tasks import text_documents
    from delphi.train.trainer import sequence_losses

    limit = 40
    table = run_sweep(
        [str(wide_run)], Options(tasks=["delphi_bpb"], limit=limit), tmp_path / "e", steps=["final"]
    )
    harness = next(r["value"] for r in table["table"] if r["metric"] == "bits_per_byte")

    folder = wide_run / "step8"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = text_documents()["test"]["text"][:limit]
    nats, size, rounding = 0.0, 0, 0.0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text).input_ids]])
            assert ids.shape[1] <= WIDE_CONTEXT["max_position_embeddings"]
            loss = sequence_losses(model(input_ids=ids).logits, ids)[0].item()  # mean over its tokens
            n = ids.shape[1] - 1
            nats += loss * n
            size += len(text.encode("utf-8"))
            # a float32 sum of n terms is within (n - 1) * eps * sum|terms| of the exact sum; each side sums
            # each story's log-probabilities in its own order (and rounds each term): 2 * n * eps * nats
            rounding += 2 * n * EPS32 * loss * n
    delphi = nats / math.log(2) / size
    # The two differ only in how float32 log-probabilities are summed (the stories' totals are summed in
    # float64 on both sides): the worst case of that, in bits per byte, is about 4e-4 here (measured: ~2e-8), inside
    # the 1e-3 the issue asks for; a missing <bos>, an <eos> scored, or a token counted twice moves it by
    # 1e-2 or more.
    bound = rounding / math.log(2) / size
    check("bits per byte: harness vs delphi's loss", abs(harness - delphi), bound)
    assert abs(harness - delphi) < 1e-3
    assert 1 < harness < 10  # a real loss (4.4 bits per byte for this model), not a degenerate zero
