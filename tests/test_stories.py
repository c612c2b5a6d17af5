"""The embedded story corpus: deterministic, varied, grammatical, learnable, and written as a loadable dataset."""

import hashlib
import math
import random
import re
from collections import Counter

import datasets
import pytest

from delphi import __version__
from delphi.atomic import write_atomically
from delphi.data.stories import generate_stories, generate_story, write_corpus
from delphi.errors import DelphiError

WORD = re.compile(r"[a-z]+")


def words(story: str) -> list[str]:
    return WORD.findall(story.lower())


@pytest.fixture(scope="module")
def train_stories():
    return generate_stories(2000, seed=0, split="train")


@pytest.fixture(scope="module")
def validation_stories():
    return generate_stories(500, seed=0, split="validation")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the generator ---------------------------------------------------------------------------


def test_same_seed_same_stories_other_seed_or_split_other_stories():
    first = generate_stories(50, seed=7)
    assert generate_stories(50, seed=7) == first
    assert generate_stories(20, seed=7) == first[:20]
    assert generate_stories(50, seed=8) != first
    assert generate_stories(50, seed=7, split="validation") != first


def test_generator_leaves_global_random_state_alone():
    random.seed(1)
    before = random.getstate()
    story = generate_story(random.Random(3))
    assert random.getstate() == before
    random.seed(2)  # a different global state changes nothing
    assert generate_story(random.Random(3)) == story


def test_word_counts_in_range(train_stories):
    counts = [len(words(s)) for s in train_stories]
    assert 50 <= min(counts) and max(counts) <= 300, (min(counts), max(counts))


def test_vocabulary_is_a_few_hundred_words(train_stories):
    vocabulary = {w for s in train_stories for w in words(s)}
    assert 300 <= len(vocabulary) <= 700, len(vocabulary)


def test_stories_have_dialogue_and_paragraphs(train_stories):
    quoted = re.compile(r'"[A-Z][^"]*[.,!?]"')
    with_dialogue = sum(bool(quoted.search(s)) for s in train_stories)
    with_paragraphs = sum("\n\n" in s for s in train_stories)
    assert with_dialogue >= 0.9 * len(train_stories)
    assert 0.2 * len(train_stories) <= with_paragraphs < len(train_stories)
    for story in train_stories:
        paragraphs = story.split("\n\n")
        assert all(p and p == p.strip() and "\n" not in p for p in paragraphs), story
        assert all(p.count('"') % 2 == 0 for p in paragraphs), story


def test_surface_grammar(train_stories):
    for story in train_stories:
        assert "{" not in story and "}" not in story, story
        assert not re.search(r"[.!?] [a-z]", story), story  # sentences start with a capital
        assert not re.search(r"\b[Aa] [aeiou]", story), story  # a/an agreement
        assert not re.search(r"\b[Aa]n [^aeiou\W]", story), story
        for sentence in re.split(r"(?<=[.!?])\s+", story):
            assert sentence[0].isupper() or sentence[0] == '"', sentence


def test_pairs_of_heroes_take_plural_agreement(train_stories):
    pair_stories = [s for s in train_stories if re.match(r"[^.]* (twins|friends) named \w+ and \w+", s)]
    assert len(pair_stories) >= 50
    for story in pair_stories:
        names = re.search(r"named (\w+ and \w+)", story).group(1)
        assert f"{names} was " not in story and " was twins" not in story, story
        assert not re.search(r"\b(we am|we is|I are|they was)\b", story, re.IGNORECASE), story
        assert "was" not in story.split(".")[0].split(), story  # "there once were twins named ..."


def test_train_and_validation_do_not_overlap(train_stories, validation_stories):
    assert len(set(train_stories)) >= 0.99 * len(train_stories)
    assert len(set(train_stories) & set(validation_stories)) <= 2
    assert validation_stories[:10] != train_stories[:10]


def test_structure_is_learnable_bigram_far_below_unigram(train_stories, validation_stories):
    """A learnability proxy: held-out bigram cross-entropy well below unigram entropy (bits per word)."""
    tokens = re.compile(r"[a-z]+|[^\sa-z]")
    train = [tokens.findall(s.lower()) for s in train_stories]
    held_out = [tokens.findall(s.lower()) for s in validation_stories]
    unigrams = Counter(w for doc in train for w in doc)
    bigrams = Counter(pair for doc in train for pair in zip(["<s>", *doc], doc, strict=False))
    contexts = Counter(w for doc in train for w in ["<s>", *doc])
    vocab, total, k = len(unigrams) + 1, sum(unigrams.values()), 0.01

    n = sum(len(doc) for doc in held_out)
    unigram_bits = (
        -sum(math.log2((unigrams[w] + k) / (total + k * vocab)) for doc in held_out for w in doc) / n
    )
    bigram_bits = (
        -sum(
            math.log2((bigrams[a, b] + k) / (contexts[a] + k * vocab))
            for doc in held_out
            for a, b in zip(["<s>", *doc], doc, strict=False)
        )
        / n
    )
    assert unigram_bits > 6, unigram_bits  # a real vocabulary, not a handful of words
    assert bigram_bits < 0.7 * unigram_bits, (unigram_bits, bigram_bits)


@pytest.mark.parametrize("n", [-1, 1.5, "3", True, None])
def test_generate_stories_rejects_bad_counts(n):
    with pytest.raises(DelphiError, match="n must be"):
        generate_stories(n)


# ---- the written corpus ----------------------------------------------------------------------


def test_write_corpus_is_byte_identical_and_loadable(tmp_path):
    a = write_corpus(tmp_path / "a", train_size=300, validation_size=40, seed=5)
    write_corpus(tmp_path / "b", train_size=300, validation_size=40, seed=5)
    write_corpus(tmp_path / "c", train_size=300, validation_size=40, seed=6)

    assert a["counts"] == {"train": 300, "validation": 40}
    assert set(a["files"]) == {"train", "validation"}
    for split in ("train", "validation"):
        path_a, path_b, path_c = (tmp_path / d / f"{split}-00000.parquet" for d in "abc")
        assert a["files"][split] == str(path_a)
        assert sha256(path_a) == sha256(path_b)
        assert sha256(path_a) != sha256(path_c)
    assert sha256(tmp_path / "a/README.md") == sha256(tmp_path / "b/README.md")

    loaded = datasets.load_dataset(str(tmp_path / "a"), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "validation"}
    assert loaded["train"].column_names == ["story"]
    assert loaded["train"]["story"] == generate_stories(300, seed=5, split="train")
    validation = datasets.load_dataset(
        str(tmp_path / "a"), split="validation", cache_dir=str(tmp_path / "cache")
    )
    assert validation["story"] == generate_stories(40, seed=5, split="validation")

    card = (tmp_path / "a/README.md").read_text()
    assert "license: apache-2.0" in card and f"delphi {__version__}" in card and "seed: 5" in card
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "README.md",
        "train-00000.parquet",
        "validation-00000.parquet",
    ]


def test_write_corpus_refuses_to_overwrite_unless_asked(tmp_path):
    write_corpus(tmp_path, train_size=20, validation_size=5, seed=0)
    before = sha256(tmp_path / "train-00000.parquet")
    with pytest.raises(DelphiError, match="overwrite"):
        write_corpus(tmp_path, train_size=20, validation_size=5, seed=1)
    assert sha256(tmp_path / "train-00000.parquet") == before

    write_corpus(tmp_path, train_size=20, validation_size=5, seed=1, overwrite=True)
    assert sha256(tmp_path / "train-00000.parquet") != before


def test_rerunning_the_same_corpus_command_writes_nothing_and_succeeds(tmp_path):
    from delphi.cli import main

    args = ["corpus", "--out-dir", str(tmp_path), "--train-size", "20", "--validation-size", "5"]
    main(args)
    files = sorted(tmp_path.iterdir())
    before = {p.name: (sha256(p), p.stat().st_mtime_ns) for p in files}
    main(args)  # a rerun of a finished command: exits 0 (no SystemExit) and touches nothing
    assert {p.name: (sha256(p), p.stat().st_mtime_ns) for p in sorted(tmp_path.iterdir())} == before
    with pytest.raises(SystemExit) as e:  # other sizes: a different corpus, refused with the flag to use
        main([*args[:-1], "6"])
    assert e.value.code == 2


@pytest.mark.parametrize("field", ["train_size", "validation_size"])
@pytest.mark.parametrize("value", [0, -3, 2.5, "100", True])
def test_write_corpus_rejects_bad_sizes_before_writing(tmp_path, field, value):
    out = tmp_path / "corpus"
    with pytest.raises(DelphiError, match=field):
        write_corpus(out, **{field: value})
    assert not out.exists()


def test_write_corpus_rejects_a_file_as_out_dir(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    with pytest.raises(DelphiError, match="not a directory"):
        write_corpus(target, train_size=5, validation_size=5)


def test_interrupted_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "train-00000.parquet"
    path.write_bytes(b"old")

    def write_half_then_fail(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, write_half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["train-00000.parquet"]
