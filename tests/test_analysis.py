"""Token-group statistics and the HTML view, on a real tokenizer and a real (untrained) model's logprobs."""

from __future__ import annotations

import math
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from delphi.errors import DelphiError
from delphi.evaluate.analysis import format_stats, html_view, token_group_stats
from delphi.evaluate.logprobs import token_logprobs

TEXT = 'Tom said, "Look at the <big> red ball & the cat!"\nThe cat ran to the tree.\n\tThe end.'
MODEL = {
    "architecture": "LlamaForCausalLM",
    "vocab_size": 300,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_hidden_layers": 1,
    "max_position_embeddings": 64,
}


@pytest.fixture(scope="module")
def tokenizer():
    from delphi.data.stories import generate_stories
    from delphi.data.tokenizer import build_tokenizer

    return build_tokenizer(iter([generate_stories(300), [TEXT] * 5]), vocab_size=300, show_progress=False)


@pytest.fixture(scope="module")
def sequence(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] + tokenizer(TEXT, add_special_tokens=False)["input_ids"]


def model_logprobs(seed: int, sequences: list[list[int]]) -> np.ndarray:
    from delphi.models import build_model

    model = build_model(MODEL, seed=seed).eval()
    with torch.no_grad():
        return token_logprobs(model, torch.tensor(sequences)).numpy()


def test_token_group_stats_match_numpy():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, size=(6, 10))
    tokens[:, 0] = 0
    logprobs = {"a@step1": -rng.random((6, 10)) * 5, "a@step8": -rng.random((6, 10))}
    for lp in logprobs.values():
        lp[:, 0] = np.nan
    rows = token_group_stats(logprobs, tokens, {"small": [1, 2, 3], "zero": [0], "absent": [99]})
    assert [(r["model"], r["group"]) for r in rows] == [
        (m, g) for m in logprobs for g in ("small", "zero", "absent")
    ]
    for row in rows:
        lp = logprobs[row["model"]]
        ids = {"small": [1, 2, 3], "zero": [0], "absent": [99]}[row["group"]]
        mask = np.isin(tokens, ids)
        mask[:, 0] = False  # position 0 is not predicted
        chosen = lp[mask]
        assert row["count"] == chosen.size
        if chosen.size == 0:
            assert math.isnan(row["mean"]) and math.isnan(row["q1"])
            continue
        assert row["mean"] == pytest.approx(chosen.mean())
        assert row["median"] == pytest.approx(np.median(chosen))
        assert (row["q1"], row["q3"]) == pytest.approx(tuple(np.percentile(chosen, [25, 75])))
        assert (row["min"], row["max"]) == pytest.approx((chosen.min(), chosen.max()))
    zero = [r for r in rows if r["group"] == "zero"]
    assert all(r["count"] == 0 for r in zero), "token 0 only occurs at the unpredicted position"

    per_token = token_group_stats({"m": logprobs["a@step8"]}, tokens, [3, 1], per_token=True)
    assert [r["token_id"] for r in per_token] == [1, 3]
    lp = logprobs["a@step8"]
    mask = tokens == 3
    mask[:, 0] = False
    assert per_token[1]["mean"] == pytest.approx(lp[mask].mean())
    table = format_stats(per_token)
    assert table.splitlines()[0].split() == [
        "model",
        "group",
        "token_id",
        "count",
        "mean",
        "median",
        "q1",
        "q3",
        "min",
        "max",
    ]
    assert len(table.splitlines()) == 3


def test_token_group_stats_on_datasets_and_ragged_rows():
    import datasets

    tokens = datasets.Dataset.from_dict({"tokens": [[0, 5, 6, 5], [0, 5, 7]]})
    lp = datasets.Dataset.from_dict({"logprobs": [[math.nan, -1.0, -2.0, -3.0], [math.nan, -5.0, -4.0]]})
    (row,) = token_group_stats({"m": lp}, tokens, [5])
    assert row["count"] == 3 and row["mean"] == pytest.approx(-3.0) and row["median"] == pytest.approx(-3.0)
    short = datasets.Dataset.from_dict({"logprobs": [[math.nan, -1.0, -2.0]]})
    with pytest.raises(DelphiError, match="do not match the token sequences"):
        token_group_stats({"short": short}, tokens, [5])


class TokenSpans(HTMLParser):
    """Collects the `<span class="tok">` elements of a page: attributes and text."""

    def __init__(self):
        super().__init__()
        self.spans: list[dict] = []
        self.tags: set[str] = set()
        self._open = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "span" and attrs.get("class") == "tok":
            self.spans.append(attrs | {"text": ""})
            self._open = True

    def handle_endtag(self, tag):
        if tag == "span":
            self._open = False

    def handle_data(self, data):
        if self._open:
            self.spans[-1]["text"] += data


def parse(page: str) -> TokenSpans:
    parser = TokenSpans()
    parser.feed(page)
    return parser


def test_html_view_one_escaped_span_per_token(tokenizer, sequence, tmp_path):
    (lp,) = model_logprobs(0, [sequence])
    page = html_view(sequence, tokenizer, lp, path=tmp_path / "view" / "seq.html", title="<step8>")
    assert (tmp_path / "view" / "seq.html").read_text(encoding="utf-8") == page
    parsed = parse(page)
    assert len(parsed.spans) == len(sequence)
    assert "big" not in parsed.tags, "token text must be escaped, never markup"
    assert "&lt;step8&gt;" in page
    shown = "".join(s["text"] for s in parsed.spans[1:]).replace("↵", "\n")
    assert shown == TEXT
    assert parsed.spans[0]["text"] == "<bos>" and "not predicted" in parsed.spans[0]["title"]
    for i, span in enumerate(parsed.spans[1:], start=1):
        assert int(span["data-token-id"]) == sequence[i]
        assert f"logprob {lp[i]:.3f}" in span["title"]
    assert page.count("<br>") == TEXT.count("\n")

    (other,) = model_logprobs(1, [sequence])
    diff_page = html_view(sequence, tokenizer, lp, other, labels=("step1", "step8"))
    spans = parse(diff_page).spans
    assert len(spans) == len(sequence)
    better = [i for i in range(1, len(sequence)) if other[i] - lp[i] > 0.05]
    worse = [i for i in range(1, len(sequence)) if other[i] - lp[i] < -0.05]
    assert better and worse
    for i in better:  # blue: more blue than red
        r, b = int(spans[i]["style"][12:14], 16), int(spans[i]["style"][16:18], 16)
        assert b > r, spans[i]["style"]
    for i in worse:
        r, b = int(spans[i]["style"][12:14], 16), int(spans[i]["style"][16:18], 16)
        assert r > b, spans[i]["style"]
    assert f"step8 - step1: {other[better[0]] - lp[better[0]]:+.3f}" in spans[better[0]]["title"]

    with pytest.raises(DelphiError, match=f"{len(sequence)} tokens but 3 logprobs"):
        html_view(sequence, tokenizer, lp[:3])


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_html_view_renders_in_headless_chromium(tokenizer, sequence, tmp_path):
    (lp,) = model_logprobs(0, [sequence])
    page = tmp_path / "seq.html"
    html_view(sequence, tokenizer, lp, path=page)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,700",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1000, 700)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # the page drew its coloured tokens: many reddish pixels (R well above G and B) and dark text
    reddish = (
        (pixels[..., 0] > 200)
        & (pixels[..., 1] < pixels[..., 0] - 40)
        & (pixels[..., 2] < pixels[..., 0] - 40)
    )
    assert reddish.sum() > 2000
    assert (pixels.sum(axis=-1) < 150).sum() > 500
