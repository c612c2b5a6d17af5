"""Train, save and load the byte-level BPE tokenizer that every delphi model uses.

GPT-2-style byte-level BPE is reversible (`decode(encode(text)) == text` for any text), so a
narrow corpus gets a small vocabulary without unknown tokens. The special tokens sit at fixed
ids so every model of a suite agrees on them: `<bos>` 0, `<eos>` 1, `<pad>` 2.
Encoding adds no special tokens: the dataset step places `<bos>`/`<eos>` itself. Documents are text,
so the literal string `<eos>` in a story is encoded as the bytes `<`, `e`, ... and never as the special
token (`split_special_tokens`, saved in `tokenizer_config.json`, so plain `AutoTokenizer` does the same).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from delphi.atomic import OutputFolder
from delphi.data.splits import load_split, require_text_feature
from delphi.errors import DelphiError
from delphi.hub.client import ensure_repo, upload_dir
from delphi.inputs import check_local_or_hub
from delphi.portable import make_portable

SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>")
BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

log = logging.getLogger(__name__)


def _text_batches(ds, feature: str, batch_size: int = 1000):
    """Yield lists of strings from one column, with a progress bar over documents."""
    from tqdm.auto import tqdm

    with tqdm(total=len(ds), desc="reading documents", unit="doc", mininterval=1.0) as bar:
        for batch in ds.select_columns([feature]).iter(batch_size=batch_size):
            texts = [t if t is not None else "" for t in batch[feature]]
            bar.update(len(texts))
            yield texts


def build_tokenizer(text_batches, vocab_size: int, *, show_progress: bool = True):
    """Train a byte-level BPE on an iterator of text batches; return a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB_SIZE:
        raise DelphiError(
            f"vocab size {vocab_size} is too small: a byte-level BPE needs at least "
            f"{MIN_VOCAB_SIZE} ({BYTE_ALPHABET_SIZE} bytes + {len(SPECIAL_TOKENS)} special tokens)"
        )
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.encode_special_tokens = True  # a literal `<eos>` in the corpus is text while training, too
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    core.train_from_iterator(text_batches, trainer=trainer)
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert core.token_to_id(token) == expected_id, (token, core.token_to_id(token))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        # the default (True) strips spaces before punctuation on decode: not reversible for BPE
        clean_up_tokenization_spaces=False,
        # documents are text: `<eos>` written in a story is not the end of a document
        split_special_tokens=True,
    )


def train_tokenizer(
    in_dataset: str,
    *,
    feature: str,
    split: str = "train",
    vocab_size: int,
    out_dir: str | Path | None = None,
    out_repo: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Train a tokenizer on `feature` of `in_dataset[split]`; save to `out_dir` and/or push to `out_repo`.

    All checks (output target, vocab size, input, column) happen before training, and the
    output directory appears only once the tokenizer is completely written.
    """
    if out_dir is None and out_repo is None:
        raise DelphiError("no output given: pass --out-dir, --out-repo, or both")
    if vocab_size < MIN_VOCAB_SIZE:
        build_tokenizer(iter(()), vocab_size)  # raises the explanatory error
    out = None
    if out_dir is not None:
        out = OutputFolder.claim(out_dir, finds=_tokenizer_files, what="a tokenizer", overwrite=overwrite)
    if out_repo is not None:
        ensure_repo(out_repo, repo_type="model")

    ds = load_split(in_dataset, split)
    require_text_feature(ds, feature, in_dataset)
    log.info(
        "training a %d-token byte-level BPE on %d documents of %s[%s]", vocab_size, len(ds), in_dataset, split
    )
    tokenizer = build_tokenizer(_text_batches(ds, feature), vocab_size)
    if len(tokenizer) < vocab_size:
        log.warning(
            "the corpus only supports %d tokens (asked for %d): BPE ran out of pairs to merge",
            len(tokenizer),
            vocab_size,
        )

    with out.staging() if out is not None else tempfile.TemporaryDirectory(prefix="delphi-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        make_portable(tmp)  # loads with transformers 4 too (delphi.portable)
        location = None
        if out_repo is not None:
            upload_dir(tmp, out_repo, commit_message=f"Tokenizer: byte-level BPE, vocab {len(tokenizer)}")
            location = f"hub repo {out_repo}"
        if out is not None:
            out.install(Path(tmp))
            location = str(out.path) if location is None else f"{out.path} and {location}"
    return {"vocab_size": len(tokenizer), "location": location, "out_dir": out.path if out else None}


# the files any tokenizer transformers can load from a folder has at least one of
TOKENIZER_FILE_NAMES = frozenset(
    {"tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model"}
)


def load_tokenizer(name_or_path: str | Path, *, revision: str | None = None):
    """Load a tokenizer from a directory or hub id and check it has the specials delphi relies on.

    It encodes text as text (`split_special_tokens`), also when it was saved before delphi said so.
    """
    from transformers import AutoTokenizer

    where = check_local_or_hub(str(name_or_path), what="tokenizer")
    if where == "local" and Path(name_or_path).expanduser().is_dir():
        files = {p.name for p in Path(name_or_path).expanduser().iterdir()}
        if not files & TOKENIZER_FILE_NAMES:
            raise DelphiError(
                f"tokenizer {str(name_or_path)!r} is a folder with no tokenizer in it (no tokenizer.json); "
                "expected the --out-dir of `delphi tokenizer`, a run's step folder, or a hub id"
            )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(name_or_path), revision=revision, split_special_tokens=True
        )
    except (OSError, ValueError) as e:
        text = " ".join(str(e).split())  # transformers' messages span several lines
        raise DelphiError(f"could not load tokenizer {str(name_or_path)!r}: {text}") from e
    require_specials(tokenizer)
    return tokenizer


def require_specials(tokenizer) -> None:
    """Sequences start with `<bos>` and documents end with `<eos>`: a tokenizer without them cannot serve."""
    for role in ("bos", "eos"):
        if getattr(tokenizer, f"{role}_token_id", None) is None:
            raise DelphiError(
                f"tokenizer {tokenizer.name_or_path!r} has no {role} token: sequences need <bos> at the "
                "start and <eos> after each document; use a tokenizer made by `delphi tokenizer`"
            )


def _tokenizer_files(folder: Path) -> list[Path]:
    return [folder / f for f in _TOKENIZER_FILES if (folder / f).exists()]
