import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delphi.data.sequences import make_sequences, tokenize_dataset
from delphi.errors import DelphiError

BOS, EOS = 0, 1


def reference_sequences(documents, seq_len, bos=BOS, eos=EOS):
    """The rule, written plainly: join documents with <eos>, take windows of seq_len - 1 tokens
    every seq_len - 2 tokens, put <bos> in front, drop the tail that cannot fill a window."""
    stream = []
    for ids in documents:
        stream += list(ids) + [eos]
    sequences, start = [], 0
    while start + seq_len - 1 <= len(stream):
        sequences.append([bos] + stream[start : start + seq_len - 1])
        start += seq_len - 2
    return sequences, stream


def random_documents(rng, count, max_len, vocab=50):
    """Token lists with ids >= 2 (never a special), including empty ones and ones longer than max_len/2."""
    lengths = rng.choice([0, 1, 2, 5, max_len // 2, max_len], size=count, p=[0.15, 0.15, 0.2, 0.2, 0.2, 0.1])
    return [list(rng.integers(2, vocab, size=n)) for n in lengths]


def shard_rows(out_dir, split):
    meta = json.loads((Path(out_dir) / "delphi_dataset.json").read_text())
    files = meta["splits"][split]["files"]
    return [row for f in files for row in pq.read_table(Path(out_dir) / f).column("tokens").to_pylist()]


def write_texts(path, texts, column="story"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: texts}), path)
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A real byte-level BPE made by delphi.data.tokenizer, trained on the embedded stories."""
    from delphi.data.stories import generate_stories
    from delphi.data.tokenizer import build_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer([generate_stories(300, seed=1)], 600, show_progress=False).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def story_texts():
    """Real sentences with the awkward cases: empty documents and documents of many sequences."""
    from delphi.data.stories import generate_stories

    stories = generate_stories(120, seed=3)
    texts = stories[:40] + ["", ""] + stories[40:80] + [" ".join(stories[80:95]), ""] + stories[95:]
    return texts


@pytest.fixture
def story_dir(tmp_path, story_texts):
    """train: the stories above; validation: a few of them."""
    write_texts(tmp_path / "in" / "train-00000.parquet", story_texts)
    write_texts(tmp_path / "in" / "validation-00000.parquet", story_texts[5:25])
    return tmp_path / "in"


# make_sequences: the core cut


@pytest.mark.parametrize("seq_len", [3, 4, 5, 8, 17, 64])
def test_make_sequences_matches_reference_on_random_documents(seq_len):
    for seed in range(30):
        rng = np.random.default_rng(seed)
        expected, stream = reference_sequences(
            random_documents(rng, rng.integers(0, 40), 3 * seq_len), seq_len
        )
        sequences, tail = make_sequences(np.array(stream, dtype=np.int32), seq_len, BOS)
        assert sequences.dtype == np.int32 and sequences.shape == (len(expected), seq_len)
        assert sequences.tolist() == expected
        assert len(tail) < seq_len - 1
        assert tail.tolist() == stream[len(expected) * (seq_len - 2) :]


@pytest.mark.parametrize("seq_len", [3, 6, 33])
def test_carrying_the_tail_over_continues_the_cut_exactly(seq_len):
    """Cutting a stream piece by piece (tail carried into the next piece) equals cutting it whole."""
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        expected, stream = reference_sequences(random_documents(rng, 60, 2 * seq_len), seq_len)
        cuts = np.sort(rng.integers(0, len(stream) + 1, size=rng.integers(1, 10)))
        rows, tail = [], np.empty(0, dtype=np.int32)
        for piece in np.split(np.array(stream, dtype=np.int32), cuts):
            sequences, tail = make_sequences(np.concatenate([tail, piece]), seq_len, BOS)
            rows += sequences.tolist()
        assert rows == expected


def test_make_sequences_by_hand():
    # documents [5, 6], [], [7], [8, 9, 10, 11, 12] -> stream 5 6 E E 7 E 8 9 10 11 12 E  (E = <eos> = 1)
    stream = np.array([5, 6, 1, 1, 7, 1, 8, 9, 10, 11, 12, 1], dtype=np.int32)
    sequences, tail = make_sequences(stream, 4, BOS)
    assert sequences.tolist() == [
        [0, 5, 6, 1],
        [0, 1, 1, 7],
        [0, 7, 1, 8],
        [0, 8, 9, 10],
        [0, 10, 11, 12],
    ]
    assert tail.tolist() == [12, 1]  # 12 starts the next sequence, which has too few tokens

    sequences, tail = make_sequences(np.array([5, 1, 1], dtype=np.int32), 3, BOS)
    assert sequences.tolist() == [[0, 5, 1], [0, 1, 1]]
    assert tail.tolist() == [1]

    sequences, tail = make_sequences(np.array([5, 6, 1], dtype=np.int32), 5, BOS)
    assert sequences.shape == (0, 5)
    assert tail.tolist() == [5, 6, 1]


@pytest.mark.parametrize("seq_len", [2, 1, 0, -4])
def test_seq_len_below_three_is_explained(seq_len):
    with pytest.raises(DelphiError, match=r"at least 3.*advances the stream by seq_len - 2"):
        make_sequences(np.arange(10, dtype=np.int32), seq_len, BOS)


# tokenize_dataset: end to end on real text


def test_hand_computed_dataset(tmp_path, tokenizer_dir, tokenizer):
    """Three short documents, an empty one and one longer than a sequence, at seq_len 4."""
    # single characters are single tokens; the stories never use these symbols, so BPE has no merges for them
    texts = ["A", "B", "", "#$%&*+=", "C"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert [len(x) for x in ids] == [1, 1, 0, 7, 1]
    (a,), (b,), (), (s1, s2, s3, s4, s5, s6, s7), (c,) = ids
    write_texts(tmp_path / "in" / "train.parquet", texts)

    out = tokenize_dataset(
        str(tmp_path / "in" / "train.parquet"),
        feature="story",
        splits=["train"],
        tokenizer=tokenizer_dir,
        seq_len=4,
        out_dir=tmp_path / "out",
    )
    # stream: a E b E E s1 s2 s3 s4 s5 s6 s7 E c E (15 tokens); stride 2, windows of 3
    assert shard_rows(tmp_path / "out", "train") == [
        [0, a, 1, b],
        [0, b, 1, 1],
        [0, 1, s1, s2],
        [0, s2, s3, s4],
        [0, s4, s5, s6],
        [0, s6, s7, 1],
        [0, 1, c, 1],
    ]
    assert out["splits"]["train"] | {"files": None} == {
        "documents": 5,
        "tokens": 15,
        "dropped_tokens": 0,  # the tail is the final <eos>, already the last token of the last sequence
        "sequences": 7,
        "files": None,
    }


@pytest.mark.parametrize("seq_len", [3, 9, 64])
def test_dataset_matches_reference_on_real_text(
    story_dir, story_texts, tokenizer_dir, tokenizer, tmp_path, seq_len
):
    out = tokenize_dataset(
        str(story_dir),
        feature="story",
        splits=["train", "validation"],
        tokenizer=str(tokenizer_dir),
        seq_len=seq_len,
        batch_size=7,
        out_dir=tmp_path / "out",
    )
    for split, texts in (("train", story_texts), ("validation", story_texts[5:25])):
        documents = tokenizer(texts, add_special_tokens=False)["input_ids"]
        expected, stream = reference_sequences(documents, seq_len)
        assert shard_rows(tmp_path / "out", split) == expected
        info = out["splits"][split]
        assert info["documents"] == len(texts)
        assert info["tokens"] == len(stream) == sum(map(len, documents)) + len(texts)
        assert info["sequences"] == len(expected)
        # every stream token is in a sequence except the dropped tail
        assert info["sequences"] * (seq_len - 2) + 1 + info["dropped_tokens"] == info["tokens"]


@pytest.mark.slow
def test_output_does_not_depend_on_batch_or_chunk_size(story_dir, tokenizer_dir, tmp_path):
    outputs = {}
    for batch_size, chunk_size in [(1, 10_000), (7, 13), (1000, 50), (3, 1)]:
        out_dir = tmp_path / f"b{batch_size}-c{chunk_size}"
        out = tokenize_dataset(
            str(story_dir),
            feature="story",
            splits=["train"],
            tokenizer=str(tokenizer_dir),
            seq_len=16,
            batch_size=batch_size,
            chunk_size=chunk_size,
            out_dir=out_dir,
        )
        info = out["splits"]["train"]
        rows = shard_rows(out_dir, "train")
        outputs[(batch_size, chunk_size)] = rows
        # shards of exactly chunk_size sequences, numbered from 0, the last one holding the rest
        count = -(-info["sequences"] // chunk_size)
        assert info["files"] == [f"train-{i:05d}.parquet" for i in range(count)]
        assert sorted(p.name for p in out_dir.glob("*.parquet")) == info["files"]
        sizes = [pq.read_metadata(out_dir / f).num_rows for f in info["files"]]
        assert sizes == [chunk_size] * (count - 1) + [info["sequences"] - chunk_size * (count - 1)]
    first = next(iter(outputs.values()))
    assert len(first) > 50
    assert all(rows == first for rows in outputs.values())


def test_loads_back_with_datasets_and_metadata_is_right(
    story_dir, story_texts, tokenizer_dir, tokenizer, tmp_path
):
    import datasets

    out_dir = tmp_path / "out"
    out = tokenize_dataset(
        str(story_dir),
        feature="story",
        splits=["train[:60]", "validation"],
        tokenizer=str(tokenizer_dir),
        seq_len=20,
        chunk_size=25,
        out_dir=out_dir,
    )
    assert out["location"] == str(out_dir) and out["seq_len"] == 20
    documents = tokenizer(story_texts[:60], add_special_tokens=False)["input_ids"]
    expected, stream = reference_sequences(documents, 20)

    train = datasets.load_dataset(str(out_dir), split="train")
    assert train.column_names == ["tokens"]
    assert train.features["tokens"].feature.dtype == "int32"
    assert [list(map(int, row)) for row in train["tokens"]] == expected
    assert all(isinstance(t, int) for t in train[0]["tokens"])
    assert (
        len(datasets.load_dataset(str(out_dir), split="validation"))
        == out["splits"]["validation"]["sequences"]
    )

    meta = json.loads((out_dir / "delphi_dataset.json").read_text())
    assert meta["seq_len"] == 20
    assert (meta["bos_token_id"], meta["eos_token_id"]) == (tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert meta["vocab_size"] == len(tokenizer)
    assert meta["tokenizer"] == str(tokenizer_dir)
    assert meta["source_splits"] == {"train": "train[:60]", "validation": "validation"}
    assert meta["splits"]["train"]["documents"] == 60
    assert meta["splits"]["train"]["tokens"] == len(stream)
    assert meta["splits"]["train"]["sequences"] == len(expected)
    assert meta["splits"] == out["splits"]
    assert "configs:" not in (out_dir / "README.md").read_text()  # see test_overwrite_then_load_is_not_stale
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_overwrite_then_load_is_not_stale(story_dir, tokenizer_dir, tmp_path):
    """datasets caches a local folder whose card has `configs` by the folder's name alone; ours has none."""
    import datasets

    out_dir = tmp_path / "out"
    for seq_len in (8, 16):
        tokenize_dataset(
            str(story_dir),
            feature="story",
            splits=["validation"],
            tokenizer=str(tokenizer_dir),
            seq_len=seq_len,
            out_dir=out_dir,
            overwrite=True,
        )
        rows = datasets.load_dataset(str(out_dir), split="validation")["tokens"]
        assert [list(r) for r in rows] == shard_rows(out_dir, "validation")
        assert {len(r) for r in rows} == {seq_len}


def test_hub_layout_loads_any_split_name(tokenizer_dir, tmp_path):
    """The folder pushed to the hub: shards under data/, a card whose configs name every split's shards."""
    import datasets

    from delphi.data.sequences import _stage_for_hub

    write_texts(tmp_path / "in" / "holdout.parquet", ["Once upon a time."] * 30)  # one file: any split name
    tokenize_dataset(
        str(tmp_path / "in" / "holdout.parquet"),
        feature="story",
        splits=["holdout"],
        tokenizer=str(tokenizer_dir),
        seq_len=8,
        chunk_size=10,
        out_dir=tmp_path / "out",
    )
    out = tmp_path / "out"
    (out / "holdout-00099.parquet").write_bytes((out / "holdout-00000.parquet").read_bytes())
    meta = json.loads((out / "delphi_dataset.json").read_text())
    files = meta["splits"]["holdout"]["files"]
    assert len(files) > 1
    staged = _stage_for_hub(out, meta)
    assert sorted(p.name for p in (staged / "data").iterdir()) == files
    assert json.loads((staged / "delphi_dataset.json").read_text())["splits"]["holdout"]["files"] == [
        "data/" + f for f in files
    ]
    rows = datasets.load_dataset(str(staged), split="holdout")["tokens"]
    assert [list(r) for r in rows] == shard_rows(out, "holdout")  # the stray shard is not read


def test_split_too_short_for_one_sequence_is_refused(tokenizer_dir, tmp_path):
    write_texts(tmp_path / "in" / "train-00000.parquet", ["Hi.", ""])
    with pytest.raises(
        DelphiError, match=r"split 'train' has only \d+ tokens \(2 documents.*shorter seq_len"
    ):
        tokenize_dataset(
            str(tmp_path / "in"),
            feature="story",
            splits=["train"],
            tokenizer=str(tokenizer_dir),
            seq_len=64,
            out_dir=tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tinystories_validation_matches_reference(tinystories, tmp_path):
    from transformers import AutoTokenizer

    from delphi.data.tokenizer import build_tokenizer

    tok_dir = tmp_path / "tok"
    train = pq.read_table(tinystories / "train-00000.parquet").column("story").to_pylist()[:2000]
    build_tokenizer([train], 2048, show_progress=False).save_pretrained(tok_dir)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    texts = pq.read_table(tinystories / "validation-00000.parquet").column("story").to_pylist()
    documents = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for seq_len in (512, 37):
        out_dir = tmp_path / f"out{seq_len}"
        out = tokenize_dataset(
            str(tinystories),
            feature="story",
            splits=["validation"],
            tokenizer=str(tok_dir),
            seq_len=seq_len,
            batch_size=500,
            chunk_size=1000,
            out_dir=out_dir,
        )
        expected, stream = reference_sequences(documents, seq_len)
        assert shard_rows(out_dir, "validation") == expected
        assert out["splits"]["validation"]["tokens"] == len(stream)


def test_cli_prints_counts(story_dir, tokenizer_dir, tmp_path, capsys):
    from delphi.cli import main

    main(
        ["dataset", "-i", str(story_dir), "-f", "story", "-t", str(tokenizer_dir), "-l", "32"]
        + ["--out-dir", str(tmp_path / "out"), "-c", "40"]
    )
    printed = capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "delphi_dataset.json").read_text())
    for split in ("train", "validation"):
        info = meta["splits"][split]
        assert (
            f"{split}: {info['documents']} documents, {info['tokens']} tokens -> {info['sequences']} sequences"
            in printed
        )


# errors: before any work, nothing left behind


def snapshot(directory):
    return {
        p.relative_to(directory): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()
    }


def fails(match, **kwargs):
    with pytest.raises(DelphiError, match=match):
        tokenize_dataset(**{"feature": "story", "splits": ["train"], "seq_len": 16, **kwargs})


def test_bad_arguments_fail_before_writing(story_dir, tokenizer_dir, tmp_path):
    common = {"in_dataset": str(story_dir), "tokenizer": str(tokenizer_dir)}
    out = tmp_path / "out"
    fails("at least 3", seq_len=2, out_dir=out, **common)
    fails("batch size must be a positive", batch_size=0, out_dir=out, **common)
    fails("chunk size must be a positive", chunk_size=0, out_dir=out, **common)
    fails("--out-dir, --out-repo", **common)
    fails(r"feature 'text' not found.*\['story'\]", feature="text", out_dir=out, **common)
    fails(
        r"name the split\(s\) \['train'\] more than once",
        splits=["train[:50%]", "train[50%:]"],
        out_dir=out,
        **common,
    )
    fails("holds the input", out_dir=story_dir, overwrite=True, **common)
    fails("non-empty list of split names", splits="train", out_dir=out, **common)
    assert not out.exists()


def test_tokenizer_without_bos_or_eos_is_refused(story_dir, tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    for role in ("bos", "eos"):
        broken = AutoTokenizer.from_pretrained(tokenizer_dir, **{f"{role}_token": None})
        broken.save_pretrained(tmp_path / f"no-{role}")
        fails(
            f"has no {role} token",
            in_dataset=str(story_dir),
            tokenizer=str(tmp_path / f"no-{role}"),
            out_dir=tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


@pytest.fixture
def written(story_dir, tokenizer_dir, tmp_path):
    """(the arguments of a tokenize_dataset run, and its out_dir of several 20-sequence shards)."""
    out = tmp_path / "out"
    args = {
        "in_dataset": str(story_dir),
        "tokenizer": str(tokenizer_dir),
        "feature": "story",
        "splits": ["train"],
    }
    tokenize_dataset(**args, seq_len=8, chunk_size=20, out_dir=out)
    return args, out


def test_existing_shards_are_kept_unless_overwrite(written):
    args, out = written
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    assert len([p for p in before if p.suffix == ".parquet"]) > 3

    with pytest.raises(DelphiError, match="already holds a dataset.*--overwrite"):
        tokenize_dataset(**args, seq_len=16, out_dir=out)
    assert snapshot(out) == before

    # with overwrite: new shards in, old shards the new ones did not replace gone, other files kept
    info = tokenize_dataset(**args, seq_len=16, out_dir=out, overwrite=True)["splits"]["train"]
    assert sorted(p.name for p in out.glob("*.parquet")) == info["files"] == ["train-00000.parquet"]
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "delphi_dataset.json").read_text())["seq_len"] == 16
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_failed_run_leaves_old_shards_untouched(written, tmp_path, monkeypatch):
    args, out = written
    before = snapshot(out)

    # the disk fills up while the third shard is being written
    real_write = pq.ParquetWriter.write_table
    calls = []

    def write_until_disk_full(self, table, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_write(self, table, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_until_disk_full)
    with pytest.raises(OSError, match="No space left"):
        tokenize_dataset(**args, seq_len=12, chunk_size=20, out_dir=out, overwrite=True)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(str(p) for p in before)

    with pytest.raises(OSError, match="No space left"):
        calls.clear()
        tokenize_dataset(**args, seq_len=12, chunk_size=20, out_dir=tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_unreachable_hub_fails_before_tokenizing(story_dir, tokenizer_dir, tmp_path, unreachable_hub):
    import time

    start = time.monotonic()
    for out_dir in (tmp_path / "out", None):
        fails(
            r"could not be reached.*needed for dataset repo 'org/stories-tokens'",
            in_dataset=str(story_dir),
            tokenizer=str(tokenizer_dir),
            out_dir=out_dir,
            out_repo="org/stories-tokens",
        )
    assert time.monotonic() - start < 30
    assert not (tmp_path / "out").exists()


def test_null_documents_count_as_empty(tokenizer_dir, tmp_path):
    write_texts(tmp_path / "a" / "train.parquet", ["One day.", None, "The end."])
    write_texts(tmp_path / "b" / "train.parquet", ["One day.", "", "The end."])
    for name in ("a", "b"):
        tokenize_dataset(
            str(tmp_path / name / "train.parquet"),
            feature="story",
            splits=["train"],
            tokenizer=str(tokenizer_dir),
            seq_len=4,
            out_dir=tmp_path / f"out-{name}",
        )
    assert shard_rows(tmp_path / "out-a", "train") == shard_rows(tmp_path / "out-b", "train")
    assert os.path.exists(tmp_path / "out-a" / "README.md")


def stream_of(rows):
    """The token stream back from sequences: each sequence after the first repeats one stream token."""
    return [t for k, row in enumerate(rows) for t in row[1 if k == 0 else 2 :]]


def test_literal_special_strings_in_documents_are_text(tokenizer_dir, tmp_path):
    """Only delphi places <bos>/<eos>: a story that says `<eos>` is not two documents."""
    from transformers import AutoTokenizer

    from delphi.cli import main

    texts = [
        "The sign said <eos> and <bos> in big letters.",
        "Tom wrote <pad> on the box.",
        "<eos>",
        "Then <bos><eos><pad> was all it said.",
    ]
    write_texts(tmp_path / "in" / "train.parquet", texts)
    # through the command with a saved tokenizer, and with a loaded one that would split on specials
    main(["dataset", "-i", str(tmp_path / "in" / "train.parquet"), "-f", "story", "-t", str(tokenizer_dir),
          "-l", "8", "--out-dir", str(tmp_path / "cli")])  # fmt: skip
    loaded = AutoTokenizer.from_pretrained(tokenizer_dir, split_special_tokens=False)
    assert 1 in loaded(texts[2], add_special_tokens=False)["input_ids"]  # what this guards against
    tokenize_dataset(str(tmp_path / "in" / "train.parquet"), feature="story", splits=["train"],
                     tokenizer=loaded, seq_len=8, out_dir=tmp_path / "loaded")  # fmt: skip
    documents = loaded(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert [loaded.decode(ids) for ids in documents] == texts  # decoding gives the text back
    assert all(not {BOS, EOS, 2} & set(ids) for ids in documents)
    expected = [t for ids in documents for t in ids + [EOS]]
    for out in ("cli", "loaded"):
        rows = shard_rows(tmp_path / out, "train")
        assert [row[0] for row in rows] == [BOS] * len(rows) and all(BOS not in row[1:] for row in rows)
        meta = json.loads((tmp_path / out / "delphi_dataset.json").read_text())["splits"]["train"]
        assert meta["tokens"] == len(expected) and meta["documents"] == len(texts)
        stream = stream_of(rows)
        assert stream == expected[: len(stream)] and len(stream) + meta["dropped_tokens"] == len(expected)
