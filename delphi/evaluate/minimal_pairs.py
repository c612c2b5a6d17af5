"""Minimal pairs from the embedded corpus' grammar (`delphi.data.words`): a grammatical sentence and an
ungrammatical one that differ in one word, as BLiMP pairs them, built from the names, things and feelings
the stories use, so a model trained on `delphi corpus` has seen every word of both sentences.

Four phenomena, each a sentence the stories themselves write:
- `subject_verb`: "Lily was very happy." / "Lily were very happy." (and a pair of names with "were");
- `pronoun_gender`: "Lily lost her ball." / "Lily lost his ball." (the possessive agrees with the name);
- `article`: "Tom had an orange kite." / "Tom had a orange kite." (a/an by the next word's sound);
- `reflexive`: "Tom was proud of himself." / "Tom was proud of herself.".

Deterministic: every candidate sentence of a phenomenon is enumerated in a fixed order and a fixed-seed
`random.Random` samples `PER_PHENOMENON` of them (the phenomena then interleaved), so the pairs are the same on every machine and Python.
"""

from __future__ import annotations

import random

from delphi.data.cast import with_article
from delphi.data.words import BOY_NAMES, GIRL_NAMES, HAPPY_WORDS, SAD_WORDS, THINGS

PER_PHENOMENON = 150
SEED = 0
PHENOMENA = ("subject_verb", "pronoun_gender", "article", "reflexive")

_POSSESSIVE = {"she": ("her", "his"), "he": ("his", "her")}
_REFLEXIVE = {"she": ("herself", "himself"), "he": ("himself", "herself")}
_FEELINGS = HAPPY_WORDS + SAD_WORDS


def _children() -> list[tuple[str, str]]:
    return [(name, "she") for name in GIRL_NAMES] + [(name, "he") for name in BOY_NAMES]


def _subject_verb() -> list[tuple[str, str]]:
    pairs = []
    for name, _ in _children():
        for feeling in _FEELINGS:
            pairs.append((f"{name} was very {feeling}.", f"{name} were very {feeling}."))
    names = [name for name, _ in _children()]
    for i, first in enumerate(names):
        for second in names[i + 1 :: 3]:
            feeling = _FEELINGS[(i + len(second)) % len(_FEELINGS)]
            pairs.append(
                (f"{first} and {second} were very {feeling}.", f"{first} and {second} was very {feeling}.")
            )
    return pairs


def _pronoun_gender() -> list[tuple[str, str]]:
    pairs = []
    for name, gender in _children():
        right, wrong = _POSSESSIVE[gender]
        for thing in THINGS:
            for verb in ("lost", "found", "loved"):
                pairs.append((f"{name} {verb} {right} {thing.noun}.", f"{name} {verb} {wrong} {thing.noun}."))
    return pairs


def _article() -> list[tuple[str, str]]:
    pairs = []
    for name, _ in _children():
        for thing in THINGS:
            for adjective in thing.adjectives:
                right = with_article(f"{adjective} {thing.noun}")
                article, rest = right.split(" ", 1)
                wrong = f"{'a' if article == 'an' else 'an'} {rest}"
                pairs.append((f"{name} had {right}.", f"{name} had {wrong}."))
    return pairs


def _reflexive() -> list[tuple[str, str]]:
    pairs = []
    for name, gender in _children():
        right, wrong = _REFLEXIVE[gender]
        for feeling in ("proud of", "happy with", "sure of"):
            for ending in ("", " and smiled", " and laughed", " and jumped"):
                pairs.append(
                    (f"{name} was {feeling} {right}{ending}.", f"{name} was {feeling} {wrong}{ending}.")
                )
    return pairs


_BUILDERS = {
    "subject_verb": _subject_verb,
    "pronoun_gender": _pronoun_gender,
    "article": _article,
    "reflexive": _reflexive,
}


def _balanced_articles(pairs: list[tuple[str, str]], rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Half the article pairs need `an` (a colour or adjective starting with a vowel), half `a`, so always
    answering one article scores 50%, not the share of consonants."""
    an = [p for p in pairs if " an " in p[0]]
    a = [p for p in pairs if " an " not in p[0]]
    return rng.sample(an, min(len(an), n // 2)) + rng.sample(a, n - min(len(an), n // 2))


def minimal_pairs(per_phenomenon: int = PER_PHENOMENON, seed: int = SEED) -> list[dict]:
    """Rows `{sentence_good, sentence_bad, phenomenon}`, the phenomena interleaved (one of each in turn), so
    the first N rows (`--limit N`) test every phenomenon, not only the first."""
    chosen = {}
    for phenomenon in PHENOMENA:
        rng = random.Random(f"{seed}:{phenomenon}")
        candidates = _BUILDERS[phenomenon]()
        n = min(per_phenomenon, len(candidates))
        pairs = (
            _balanced_articles(candidates, rng, n) if phenomenon == "article" else rng.sample(candidates, n)
        )
        rng.shuffle(pairs)  # the article pairs come as all `an`, then all `a`
        chosen[phenomenon] = pairs
    rows = []
    for i in range(max(map(len, chosen.values()))):
        for phenomenon in PHENOMENA:
            if i < len(chosen[phenomenon]):
                good, bad = chosen[phenomenon][i]
                rows.append({"sentence_good": good, "sentence_bad": bad, "phenomenon": phenomenon})
    return rows
