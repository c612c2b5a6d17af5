"""The embedded offline corpus: short, simple English stories made by a deterministic generator.

`make demo` has to run the whole pipeline (tokenizer -> token sequences -> a tiny LM) on a fresh
machine with no network and no TinyStories download. So delphi carries its own corpus, generated
rather than stored: a template grammar of small plots (setup, a problem, help, a resolution and a
lesson) filled from word lists, with agreement handled (a/an, he/she/they/it, was/were, past tense)
and dialogue in quotes. The grammar is consistent enough that a small LM learns it (its loss falls
far below the unigram entropy) and the slot fills combine into enough variety that it cannot simply
memorize the stories. Text and code are delphi's own (Apache-2.0); nothing is copied from TinyStories.

Same seed and sizes give byte-identical stories and parquet files; train and validation come from
independent random streams derived from the seed.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

from delphi import __version__, atomic
from delphi.data.cast import (
    Teller,
    cast_broken,
    cast_friend,
    cast_gift,
    cast_grown,
    cast_lost,
    cast_share,
    cast_stuck,
    make_hero,
    with_article,
)
from delphi.data.plots import (
    Beats,
    broken_plot,
    critter_plot,
    fear_plot,
    gift_plot,
    lost_plot,
    new_friend_plot,
    practice_plot,
    rain_plot,
    share_plot,
    stuck_plot,
)
from delphi.data.words import (
    ACTIVITIES,
    COLORS,
    CRITTERS,
    DAYS,
    FEARS,
    FOUND_SPOTS,
    HAPPY_WORDS,
    HIGH_SPOTS,
    PLACES,
    SAD_WORDS,
    SEARCH_SPOTS,
    SKILLS,
    THINGS,
    Thing,
)
from delphi.errors import DelphiError
from delphi.inputs import check_output_dir

log = logging.getLogger("delphi.data.stories")

SPLITS = ("train", "validation")
FEATURE = "story"

Plot = Callable[[Teller], Beats]
# Each plot with the cast builder that picks its supporting roles and plot-specific slots (the thing...)
PLOTS: tuple[tuple[Plot, Callable, bool], ...] = (  # (plot, cast builder, may the hero be a pair)
    (lost_plot, cast_lost, True),
    (stuck_plot, cast_stuck, True),
    (broken_plot, cast_broken, True),
    (share_plot, cast_share, False),
    (fear_plot, cast_grown, True),
    (critter_plot, cast_grown, True),
    (rain_plot, cast_grown, True),
    (gift_plot, cast_gift, True),
    (new_friend_plot, cast_friend, True),
    (practice_plot, cast_grown, True),
)


def generate_story(rng: random.Random) -> str:
    """One story drawn from `rng` (and nothing else): paragraphs separated by a blank line."""
    plot, cast, allow_pair = rng.choice(PLOTS)
    taken: set[str] = set()
    hero = make_hero(rng, taken, allow_pair)
    roles, extra = cast(rng, hero, taken)
    thing: Thing = extra.pop("thing", None) or rng.choice(THINGS)
    adj_thing = f"{rng.choice(thing.adjectives)} {thing.noun}"
    place = rng.choice(PLACES)
    activity, activity_past = rng.choice(ACTIVITIES)
    spot, spot2 = rng.sample(SEARCH_SPOTS, 2)
    extra |= {
        "thing": thing.noun,
        "adj_thing": adj_thing,
        "adj_thing_a": with_article(adj_thing),
        "damage": thing.damage or "broke",
        "place": place.name,
        "place_at": place.at,
        "place_to": place.to,
        "activity": activity,
        "activity_past": activity_past,
        "day": rng.choice(DAYS),
        "time_of_day": rng.choice(("morning", "afternoon", "evening")),
        "search_spot": spot,
        "search_spot2": spot2,
        "found_spot": rng.choice(FOUND_SPOTS),
        "high_spot": rng.choice(HIGH_SPOTS),
        "color": rng.choice(COLORS),
        "sad": rng.choice(SAD_WORDS),
        "happy": rng.choice(HAPPY_WORDS),
        "proud": rng.choice(("proud", "happy")),
        "fear": rng.choice(FEARS),
        "critter": rng.choice(CRITTERS),
        "skill": rng.choice(SKILLS),
    }
    beats = plot(Teller(rng, {"hero": hero, **roles}, extra))
    return _paragraphs(rng, beats)


def _paragraphs(rng: random.Random, beats: Beats) -> str:
    """Join beats into paragraphs: sometimes one block, often two to four."""
    paragraphs = [list(beats[0])]
    for beat in beats[1:]:
        if rng.random() < 0.35:
            paragraphs.append(list(beat))
        else:
            paragraphs[-1].extend(beat)
    return "\n\n".join(" ".join(sentences) for sentences in paragraphs)


def _split_rng(seed: int, split: str) -> random.Random:
    """An independent stream per (seed, split): validation is never a prefix or copy of train."""
    return random.Random(f"delphi.stories:{seed}:{split}")  # the corpus identity: never renamed


def generate_stories(n: int, seed: int = 0, split: str = "train") -> list[str]:
    """`n` stories for `split`; the same (n, seed, split) always gives the same list."""
    _check_count("n", n, minimum=0)
    _check_count("seed", seed, minimum=None)
    if not isinstance(split, str) or not split:
        raise DelphiError(f"split must be a non-empty string such as 'train' or 'validation', got {split!r}")
    rng = _split_rng(seed, split)
    return [generate_story(rng) for _ in range(n)]


def _check_count(name: str, value, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DelphiError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DelphiError(f"{name} must be at least {minimum}, got {value}")


def _write_parquet(stories: list[str], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({FEATURE: pa.array(stories, type=pa.string())})
    # fixed codec and level, no pandas or time metadata: same stories -> same bytes
    atomic.write_atomically(
        path, lambda tmp: pq.write_table(table, tmp, compression="zstd", compression_level=3)
    )


def _dataset_card(counts: dict[str, int], seed: int) -> str:
    """The README that makes the folder a self-describing hub dataset (splits, license, provenance)."""
    import pyarrow

    return f"""---
license: apache-2.0
language:
- en
pretty_name: delphi synthetic stories
---

# delphi synthetic stories

Short, simple English stories in the spirit of TinyStories, made by delphi's own template
generator (`delphi.data.stories`), so the demo pipeline (tokenizer, tokenized dataset, a tiny LM) runs
offline. Each story has a small plot (a problem, some help, a resolution and a lesson), dialogue in
quotes and a limited vocabulary. Column: `story`.

- train: {counts["train"]} stories (`train-00000.parquet`)
- validation: {counts["validation"]} stories (`validation-00000.parquet`)
- seed: {seed}; train and validation come from independent streams derived from it
- made with: delphi {__version__} (pyarrow {pyarrow.__version__}), `delphi corpus --seed {seed} --train-size {counts["train"]} \
--validation-size {counts["validation"]}`

The same seed, sizes, delphi version and pyarrow version give byte-identical files.
The text is generated by delphi's code and is licensed Apache-2.0, like delphi.
"""


def write_corpus(
    out_dir: str | os.PathLike,
    train_size: int = 10_000,
    validation_size: int = 1_000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write `train-00000.parquet`, `validation-00000.parquet` (column `story`) and a README card.

    A rerun with the same seed and sizes (same delphi and pyarrow versions, as its card records) finds the
    corpus already there and writes nothing; other existing parquet files are replaced only with
    `overwrite`. Returns `{"files": {split: path}, "counts": {split: n}, "written": bool}`.
    """
    _check_count("train_size", train_size, minimum=1)
    _check_count("validation_size", validation_size, minimum=1)
    _check_count("seed", seed, minimum=None)
    out = check_output_dir(out_dir, what="--out-dir")
    files = {split: out / f"{split}-00000.parquet" for split in SPLITS}
    existing = [str(p) for p in files.values() if p.exists()]
    counts = {"train": train_size, "validation": validation_size}
    card = _dataset_card(counts, seed)
    if existing and not overwrite:
        if len(existing) == len(files) and _read_text(out / "README.md") == card:
            log.info("%s already holds this corpus (seed %d, sizes %s): nothing to do", out, seed, counts)
            return {
                "files": {split: str(path) for split, path in files.items()},
                "counts": counts,
                "written": False,
            }
        raise DelphiError(
            f"{str(out)!r} already holds a different corpus ({', '.join(existing)}; its README.md records "
            "how it was made); pass --overwrite (overwrite=True) to replace it, or choose another out_dir"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DelphiError(f"cannot create out_dir {str(out)!r}: {e}") from e

    for split in SPLITS:
        _write_parquet(generate_stories(counts[split], seed, split), files[split])
    atomic.write_atomically(out / "README.md", lambda tmp: tmp.write_text(card, encoding="utf-8"))
    return {"files": {split: str(path) for split, path in files.items()}, "counts": counts, "written": True}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
