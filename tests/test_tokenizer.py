import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delphi.data.tokenizer import MIN_VOCAB_SIZE, load_tokenizer, train_tokenizer
from delphi.errors import DelphiError


@pytest.fixture(scope="module")
def stories_tokenizer(tinystories, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "stories-tokenizer"
    info = train_tokenizer(str(tinystories), feature="story", split="train", vocab_size=4096, out_dir=out)
    assert info["vocab_size"] == 4096
    return out


@pytest.mark.slow
def test_tinystories_tokenizer_roundtrips_every_validation_story(stories_tokenizer, tinystories):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stories_tokenizer)
    assert len(tok) == 4096
    assert [tok.convert_ids_to_tokens(i) for i in (0, 1, 2)] == ["<bos>", "<eos>", "<pad>"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)

    stories = pq.read_table(tinystories / "validation-00000.parquet").column("story").to_pylist()
    encoded = tok(stories, add_special_tokens=True)["input_ids"]
    decoded = tok.batch_decode(encoded)
    bad = [i for i, (s, d) in enumerate(zip(stories, decoded, strict=True)) if s != d]
    assert not bad, f"{len(bad)} stories do not round-trip, e.g. {stories[bad[0]]!r}"
    # no special tokens sneak in: the dataset step places <bos>/<eos> itself
    assert all(0 not in ids and 1 not in ids for ids in encoded)
    # BPE actually compresses: far fewer tokens than bytes
    n_tokens = sum(map(len, encoded))
    n_bytes = sum(len(s.encode()) for s in stories)
    assert n_tokens < n_bytes / 3


@pytest.mark.slow
def test_loading_and_decoding_print_no_warnings(stories_tokenizer, caplog, capfd):
    from transformers import AutoTokenizer

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        tok = AutoTokenizer.from_pretrained(stories_tokenizer)
        text = 'He said , "Hi !" . Then  she  left .\n\nThe end .'
        assert tok.decode(tok(text)["input_ids"]) == text
    assert not caught, [str(w.message) for w in caught]
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    err = capfd.readouterr().err
    assert "warn" not in err.lower(), err


@pytest.mark.slow
def test_arbitrary_unicode_roundtrips(stories_tokenizer):
    tok = load_tokenizer(stories_tokenizer)
    for text in ["", " ", "naïve café – “quotes” 😀 日本語", "\t\ttabs\r\nand CRLF", "â€œmojibakeâ€\x9d"]:
        assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.slow
def test_cli_trains_on_sliced_split(text_dir, tmp_path):
    out = tmp_path / "tok"
    proc = subprocess.run(
        [sys.executable, "-m", "delphi", "tokenizer", "-i", str(text_dir), "-f", "story",
         "-s", "train[:50%]", "-v", "300", "--out-dir", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    tok = load_tokenizer(out)
    assert tok.bos_token_id == 0 and len(tok) <= 300


def _fails(tmp_path, match, **kwargs):
    out = tmp_path / "never"
    args = dict(feature="story", split="train", vocab_size=300, out_dir=out)
    args.update(kwargs)
    source = args.pop("source")
    with pytest.raises(DelphiError, match=match):
        train_tokenizer(source, **args)
    assert not out.exists(), "a failed run must not leave an output directory"
    assert not list(tmp_path.glob(".tokenizer-*")), "no temporary directory left behind"


def test_missing_feature_lists_columns(text_dir, tmp_path):
    _fails(tmp_path, r"'text' not found.*\['story', 'n'\]", source=str(text_dir), feature="text")


def test_non_string_feature(text_dir, tmp_path):
    _fails(tmp_path, r"'n'.*expected a string column", source=str(text_dir), feature="n")


def test_empty_split(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(pa.table({"story": pa.array([], pa.string())}), empty / "train-00000.parquet")
    _fails(tmp_path, "empty", source=str(empty))


def test_vocab_too_small(text_dir, tmp_path):
    _fails(tmp_path, f"at least {MIN_VOCAB_SIZE}", source=str(text_dir), vocab_size=MIN_VOCAB_SIZE - 1)


def test_unreadable_input(tmp_path):
    _fails(
        tmp_path,
        "no such file or directory: .*missing/dir.*missing. does not exist either",
        source=str(tmp_path / "missing" / "dir"),
    )


def test_unknown_split_names_available(text_dir, tmp_path):
    _fails(tmp_path, r"'test' not found", source=str(text_dir), split="test")


def test_no_output_given(text_dir, tmp_path):
    _fails(tmp_path, "--out-dir, --out-repo", source=str(text_dir), out_dir=None)


def test_unreachable_hub_fails_before_training(text_dir, tmp_path, unreachable_hub):
    _fails(
        tmp_path,
        r"could not be reached.*needed for model repo 'org/tok'",
        source=str(text_dir),
        out_repo="org/tok",
    )


def test_refuses_to_replace_existing_tokenizer(text_dir, tmp_path):
    out = tmp_path / "tok"
    train_tokenizer(str(text_dir), feature="story", vocab_size=300, out_dir=out)
    before = (out / "tokenizer.json").read_bytes()
    with pytest.raises(DelphiError, match="already holds a tokenizer.*--overwrite"):
        train_tokenizer(str(text_dir), feature="story", vocab_size=280, out_dir=out)
    assert (out / "tokenizer.json").read_bytes() == before
    train_tokenizer(str(text_dir), feature="story", vocab_size=280, out_dir=out, overwrite=True)
    assert len(load_tokenizer(out)) <= 280


@pytest.mark.slow
def test_cli_error_is_one_clean_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "delphi", "tokenizer", "-i", str(tmp_path / "nope"), "-f", "story",
         "-v", "300", "--out-dir", str(tmp_path / "o")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("delphi tokenizer: error:")


def test_help_lists_the_original_flags():
    proc = subprocess.run(
        [sys.executable, "-m", "delphi", "tokenizer", "--help"], capture_output=True, text=True, check=True
    )
    for flag in ("--in-dataset", "-i", "--feature", "-f", "--split", "-s", "--vocab-size", "-v", "--out-dir",
                 "--out-repo"):  # fmt: skip
        assert flag in proc.stdout
    assert Path(sys.executable).exists()


def test_a_folder_with_no_tokenizer_is_one_line(text_dir, tmp_path, capsys):
    from tiny import cli_error

    (tmp_path / "empty").mkdir()
    for folder in (text_dir, tmp_path / "empty"):  # a dataset given as the tokenizer, an empty folder
        with pytest.raises(DelphiError, match=r"is a folder with no tokenizer in it \(no tokenizer.json\)"):
            load_tokenizer(folder)
    command = ["dataset", "-i", str(text_dir), "-f", "text", "-t", str(text_dir), "-l", "16"]
    line = cli_error(capsys, [*command, "--out-dir", str(tmp_path / "out")])
    assert "is a folder with no tokenizer in it" in line and not (tmp_path / "out").exists()


# documents are text: the literal strings `<bos>`, `<eos>`, `<pad>` in a story are not special tokens
LITERAL_STORIES = [
    "The sign said <eos> and <bos> in big letters.",
    "Tom wrote <pad> on the box, then <eos><eos> twice.",
    "A web page ends with </html> and a <bos>-like tag.",
]


def test_literal_special_strings_in_stories_are_text(text_dir, tmp_path):
    from transformers import AutoTokenizer

    stories = pq.read_table(text_dir / "train-00000.parquet").column("story").to_pylist()
    corpus = tmp_path / "literal"
    corpus.mkdir()
    pq.write_table(pa.table({"story": stories + LITERAL_STORIES * 5}), corpus / "train-00000.parquet")
    out = tmp_path / "tok"
    train_tokenizer(str(corpus), feature="story", split="train", vocab_size=320, out_dir=out)
    # the tokenizer's own training counted `<eos>` in a story as the characters it is
    assert "eos" in AutoTokenizer.from_pretrained(out).get_vocab()

    plain = AutoTokenizer.from_pretrained(out)  # what any transformers user gets, from tokenizer_config.json
    for tok in (plain, load_tokenizer(out)):
        for story in LITERAL_STORIES:
            ids = tok(story, add_special_tokens=False)["input_ids"]
            assert not {0, 1, 2} & set(ids), (story, ids)
            assert tok.decode(ids) == story
            assert tok.decode(ids, skip_special_tokens=True) == story
        assert tok.convert_tokens_to_ids("<eos>") == 1  # the special token itself is still there


def test_a_tokenizer_saved_before_delphi_said_so_is_loaded_as_text(text_dir, tmp_path):
    """Tokenizers written by earlier delphi versions have no `split_special_tokens` in their config."""
    import json

    out = tmp_path / "tok"
    train_tokenizer(str(text_dir), feature="story", split="train", vocab_size=300, out_dir=out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config.pop("split_special_tokens") is True
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    ids = load_tokenizer(out)(LITERAL_STORIES[0], add_special_tokens=False)["input_ids"]
    assert not {0, 1, 2} & set(ids) and load_tokenizer(out).decode(ids) == LITERAL_STORIES[0]
