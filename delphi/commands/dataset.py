"""`delphi dataset`: tokenize a text dataset into fixed-length sequences."""

from __future__ import annotations

import argparse

HELP = "tokenize a text dataset into fixed-length sequences (parquet shards)"
DESCRIPTION = (
    "Tokenize documents, join them with <eos>, and cut the stream into sequences of --seq-len tokens that "
    "start with <bos> and repeat the previous sequence's last token. Writes `{split}-{index:05d}.parquet` "
    "shards with one column `tokens`."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in-dataset", "-i", required=True, help="local dir or file, or hub dataset id")
    p.add_argument("--feature", "-f", required=True, help="name of the text column, e.g. story")
    p.add_argument(
        "--split",
        "-s",
        nargs="+",
        default=["train", "validation"],
        help="one or more splits, with optional slicing (default: train validation)",
    )
    p.add_argument("--tokenizer", "-t", required=True, help="tokenizer directory or hub id")
    p.add_argument("--seq-len", "-l", type=int, required=True, help="tokens per sequence, <bos> included")
    p.add_argument("--batch-size", "-b", type=int, default=1000, help="documents encoded per batch")
    p.add_argument(
        "--chunk-size",
        "-c",
        type=int,
        default=200_000,
        help="max sequences per parquet shard (default 200000)",
    )
    p.add_argument("--out-dir", help="local directory for the shards")
    p.add_argument("--out-repo", help="hub dataset repo to push the shards to (under data/)")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in --out-dir")


def run(args: argparse.Namespace) -> None:
    from delphi.data.sequences import tokenize_dataset

    out = tokenize_dataset(
        args.in_dataset,
        feature=args.feature,
        splits=args.split,
        tokenizer=args.tokenizer,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        out_dir=args.out_dir,
        out_repo=args.out_repo,
        overwrite=args.overwrite,
    )
    for split, info in out["splits"].items():
        print(
            f"{split}: {info['documents']} documents, {info['tokens']} tokens -> "
            f"{info['sequences']} sequences of {out['seq_len']} in {len(info['files'])} shard(s)"
        )
    print(f"written to {out['location']}")
