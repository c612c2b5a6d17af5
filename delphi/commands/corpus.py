"""`delphi corpus`: write the embedded synthetic story corpus."""

from __future__ import annotations

import argparse

HELP = "write the embedded synthetic story corpus (train/validation parquet)"
DESCRIPTION = (
    "Generate the embedded, deterministic corpus of simple English stories: parquet files "
    "`train-00000.parquet` and `validation-00000.parquet` with column `story`. Same seed and sizes give "
    "byte-identical files."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", "-o", required=True, help="directory to write the parquet files to")
    p.add_argument(
        "--train-size", type=int, default=10_000, help="stories in the train split (default 10000)"
    )
    p.add_argument(
        "--validation-size", type=int, default=1_000, help="stories in the validation split (default 1000)"
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out-dir")


def run(args: argparse.Namespace) -> None:
    from delphi.data.stories import write_corpus

    info = write_corpus(
        args.out_dir,
        train_size=args.train_size,
        validation_size=args.validation_size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    for split, path in info["files"].items():
        print(f"{split}: {info['counts'][split]} stories {'->' if info['written'] else 'already in'} {path}")
