"""Analysis of per-token logprobs across models and checkpoints: statistics over groups of token ids,
and a standalone HTML view of one sequence coloured by logprob or by the change between two checkpoints.

Inputs are what `delphi logprobs` writes (a `datasets.Dataset` with column `logprobs`, NaN at position 0)
and the tokenized sequences it scored (column `tokens`), or plain arrays / lists of lists of the same shape.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from delphi import atomic
from delphi.errors import DelphiError

STATS = ("count", "mean", "median", "q1", "q3", "min", "max")


def _flatten(rows, column: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(all values in row order, length of each row) of a Dataset column, 2-D array or list of lists."""
    import pyarrow.compute as pc

    if hasattr(rows, "data") and hasattr(rows, "column_names"):  # a datasets.Dataset: read Arrow directly
        if column not in rows.column_names:
            raise DelphiError(f"{what} has no column {column!r}; columns: {rows.column_names}")
        arrow = rows.data.column(column).combine_chunks()
        return arrow.flatten().to_numpy(zero_copy_only=False), pc.list_value_length(arrow).to_numpy()
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        return rows.reshape(-1), np.full(rows.shape[0], rows.shape[1])
    rows = [np.asarray(r) for r in rows]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    return (np.concatenate(rows) if rows else np.array([])), lengths


def _summary(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"count": 0} | {k: math.nan for k in STATS[1:]}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def token_group_stats(
    logprobs_by_model: Mapping[str, object],
    tokens,
    token_ids: Iterable[int] | Mapping[str, Iterable[int]],
    *,
    per_token: bool = False,
) -> list[dict]:
    """Statistics of the logprobs a model gave to the tokens in a group, for each model/checkpoint.

    `logprobs_by_model`: {label: logprobs of the sequences in `tokens`} (e.g. {"llama2-1m@step64":
    load_logprobs(...), ...}); `tokens`: the scored sequences (Dataset with column `tokens`, 2-D array,
    or lists). `token_ids`: one group of ids, or {group name: ids}. Position 0 (not predicted) is left out.
    Returns rows {"model", "group", "token_id" (None unless per_token), "count", "mean", "median",
    "q1", "q3", "min", "max"}, in the order of the models, then groups, then ids.
    """
    groups = dict(token_ids) if isinstance(token_ids, Mapping) else {"tokens": token_ids}
    groups = {name: sorted({int(i) for i in ids}) for name, ids in groups.items()}
    ids, lengths = _flatten(tokens, "tokens", "tokens")
    rows = []
    for label, logprobs in logprobs_by_model.items():
        values, lp_lengths = _flatten(logprobs, "logprobs", f"logprobs of {label!r}")
        if not np.array_equal(lengths, lp_lengths):
            raise DelphiError(
                f"logprobs of {label!r} do not match the token sequences: {len(lp_lengths)} rows of "
                f"lengths {lp_lengths[:3].tolist()}... vs {len(lengths)} of {lengths[:3].tolist()}..."
            )
        predicted = ~np.isnan(values)
        for group, members in groups.items():
            if per_token:
                for token_id in members:
                    chosen = values[(ids == token_id) & predicted]
                    rows.append({"model": label, "group": group, "token_id": token_id} | _summary(chosen))
            else:
                chosen = values[np.isin(ids, members) & predicted]
                rows.append({"model": label, "group": group, "token_id": None} | _summary(chosen))
    return rows


def format_stats(rows: list[dict]) -> str:
    """A plain-text table of `token_group_stats` rows, for printing."""
    head = ["model", "group", "token_id", *STATS]
    cells = [head] + [
        [str(r["model"]), str(r["group"]), "" if r["token_id"] is None else str(r["token_id"])]
        + [str(r["count"])]
        + [f"{r[k]:.4f}" for k in STATS[1:]]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


# ---- HTML view ----

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 60em; }
.seq { font-family: monospace; font-size: 15px; line-height: 1.9; }
.tok { display: inline-block; white-space: pre; border: 1px solid #ccc; margin: 0 1px; padding: 1px 0; border-radius: 2px; }
.legend { display: flex; align-items: center; gap: .6em; margin: 1em 0; font-size: 13px; }
.bar { width: 16em; height: 1em; border: 1px solid #999; }
.note { color: #555; font-size: 13px; }
"""
_NO_PREDICTION = "#e6e6e6"


def _shade(fraction: float, rgb: tuple[int, int, int]) -> str:
    """White (0) to `rgb` (1)."""
    f = min(max(fraction, 0.0), 1.0)
    r, g, b = (round(255 + (c - 255) * f) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


_RED, _BLUE = (214, 39, 40), (31, 119, 180)


def _display(text: str) -> str:
    """Make invisible tokens visible: a newline shows as ↵ (a line break follows the token)."""
    return text.replace("\r", "␍").replace("\n", "↵") or "∅"


def html_view(
    tokens: Iterable[int],
    tokenizer,
    logprobs: Iterable[float],
    other_logprobs: Iterable[float] | None = None,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    labels: tuple[str, str] = ("A", "B"),
    max_nats: float = 10.0,
) -> str:
    """A standalone HTML page showing one sequence, one `<span class="tok">` per token.

    Without `other_logprobs`: each token is shaded from white (logprob 0) to red (logprob <= -max_nats).
    With it: shaded by the difference other - logprobs (B - A), blue where B predicts the token better,
    red where worse, scaled to the largest difference in the sequence. Hovering a token shows its
    numbers. Written to `path` when given; the HTML text is returned either way.
    """
    ids = [int(t) for t in tokens]
    a = np.asarray(list(logprobs), dtype=np.float64)
    b = None if other_logprobs is None else np.asarray(list(other_logprobs), dtype=np.float64)
    if len(a) != len(ids) or (b is not None and len(b) != len(ids)):
        raise DelphiError(
            f"{len(ids)} tokens but {len(a)} logprobs"
            + ("" if b is None else f" and {len(b)} other logprobs")
        )
    diff = None if b is None else b - a
    scale = None
    if diff is not None:
        finite = np.abs(diff[np.isfinite(diff)])
        scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0

    spans = []
    for i, token_id in enumerate(ids):
        text = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        tip = [f"#{i} token {token_id} {text!r}"]
        if diff is None:
            if math.isnan(a[i]):
                colour = _NO_PREDICTION
                tip.append("first token: not predicted")
            else:
                colour = _shade(-a[i] / max_nats, _RED)
                tip.append(f"logprob {a[i]:.3f} (p = {math.exp(a[i]):.2%})")
        else:
            if math.isnan(diff[i]):
                colour = _NO_PREDICTION
                tip.append("first token: not predicted")
            else:
                colour = _shade(abs(diff[i]) / scale, _BLUE if diff[i] > 0 else _RED)
                first, second = labels
                tip.append(f"{first}: {a[i]:.3f}, {second}: {b[i]:.3f}, {second} - {first}: {diff[i]:+.3f}")
        spans.append(
            f'<span class="tok" data-index="{i}" data-token-id="{token_id}" style="background:{colour}" '
            f'title="{html.escape(" | ".join(tip), quote=True)}">{html.escape(_display(text))}</span>'
            + ("<br>" if "\n" in text else "")
        )

    if diff is None:
        legend = (
            f'<span>logprob 0</span><div class="bar" style="background:linear-gradient(to right, #ffffff, '
            f'{_shade(1, _RED)})"></div><span>&le; {-max_nats:g}</span>'
        )
        heading = title or "next-token logprobs"
    else:
        legend = (
            f"<span>{html.escape(labels[1])} worse ({-scale:.2f})</span>"
            f'<div class="bar" style="background:linear-gradient(to right, {_shade(1, _RED)}, #ffffff, '
            f'{_shade(1, _BLUE)})"></div><span>{html.escape(labels[1])} better (+{scale:.2f})</span>'
        )
        heading = title or f"logprob change {labels[0]} -> {labels[1]}"
    mean = np.nanmean(a) if np.isfinite(a).any() else math.nan
    note = f"{len(ids)} tokens; mean logprob {mean:.3f}"
    if b is not None:
        note += f" ({html.escape(labels[0])}), {np.nanmean(b):.3f} ({html.escape(labels[1])})"
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(heading)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h2>{html.escape(heading)}</h2>\n"
        f'<div class="legend">{legend}<span class="note">grey: first token (not predicted); '
        f"hover a token for numbers</span></div>\n"
        f'<p class="note">{note}</p>\n<div class="seq">{"".join(spans)}</div>\n</body>\n</html>\n'
    )
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, page)
    return page
