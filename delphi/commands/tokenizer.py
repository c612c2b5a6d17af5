"""`delphi tokenizer`: train a byte-level BPE tokenizer."""

from __future__ import annotations

import argparse

HELP = "train a byte-level BPE tokenizer with <bos> <eos> <pad> at ids 0, 1, 2"
DESCRIPTION = (
    "Train a reversible GPT-2-style byte-level BPE tokenizer on one text feature of a dataset and save it "
    "so `transformers.AutoTokenizer.from_pretrained` loads it."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in-dataset", "-i", required=True, help="local dir or file, or hub dataset id")
    p.add_argument("--feature", "-f", required=True, help="name of the text column, e.g. story")
    p.add_argument("--split", "-s", default="train", help="split, with optional slicing, e.g. 'train[:10%%]'")
    p.add_argument("--vocab-size", "-v", type=int, required=True, help="vocabulary size, specials included")
    p.add_argument("--out-dir", help="local directory to save the tokenizer to")
    p.add_argument("--out-repo", help="hub model repo to push the tokenizer to, e.g. org/stories-tokenizer")
    p.add_argument("--overwrite", action="store_true", help="replace a tokenizer already in --out-dir")


def run(args: argparse.Namespace) -> None:
    from delphi.data.tokenizer import train_tokenizer

    out = train_tokenizer(
        args.in_dataset,
        feature=args.feature,
        split=args.split,
        vocab_size=args.vocab_size,
        out_dir=args.out_dir,
        out_repo=args.out_repo,
        overwrite=args.overwrite,
    )
    print(f"tokenizer (vocab {out['vocab_size']}) written to {out['location']}")
