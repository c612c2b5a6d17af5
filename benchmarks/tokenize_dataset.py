"""How fast is `delphi.data.sequences.tokenize_dataset` compared with the tokenizer alone?

Side by side on the same documents, each repeated and reported as the median:
  (a)  the bare tokenizer: `tokenizer(batch_of_texts)` on texts already in memory (the ceiling);
  (a') the Rust tokenizer's `encode_batch_fast` alone (what tokenize_dataset calls);
  (b)  `tokenize_dataset` end to end: read parquet, encode, cut, write parquet shards;
  (c)  the original algorithm written plainly (a deque, one popleft per token) with the
       correct remainder rule, reading and writing the same way; its rows must equal (b)'s.
Speeds are document tokens (no <eos>/<bos>) per second. Target: (b)/(a) >= 0.8.

    python benchmarks/tokenize_dataset.py [--data DIR] [--split validation] [--tokenizer DIR]

(Not `benchmarks/tokenize.py`: run as a script, that name would shadow the standard library's
`tokenize` module and break every import of transformers.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import deque
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
TINYSTORIES = REPO.parent / "shared" / "data" / "tinystories"


def bare_tokenizer(tokenizer, texts: list[str], batch_size: int) -> int:
    """(a): encode texts already in memory, batch by batch; return the token count."""
    count = 0
    for start in range(0, len(texts), batch_size):
        ids = tokenizer(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]
        count += sum(map(len, ids))
    return count


def bare_backend(tokenizer, texts: list[str], batch_size: int) -> int:
    """(a'): the Rust tokenizer's batch encode without offsets, ids pulled into Python lists."""
    backend, count = tokenizer.backend_tokenizer, 0
    for start in range(0, len(texts), batch_size):
        encodings = backend.encode_batch_fast(texts[start : start + batch_size], add_special_tokens=False)
        count += sum(len(e.ids) for e in encodings)
    return count


def delphi_end_to_end(
    data: str, split: str, feature: str, tokenizer_dir: str, seq_len: int, batch_size: int, out_dir
):
    """(b): tokenize_dataset into a fresh directory; return (document tokens, shard directory)."""
    from delphi.data.sequences import tokenize_dataset

    out = tokenize_dataset(
        data,
        feature=feature,
        splits=[split],
        tokenizer=tokenizer_dir,
        seq_len=seq_len,
        batch_size=batch_size,
        out_dir=out_dir,
        overwrite=True,
    )
    info = out["splits"][split]
    return info["tokens"] - info["documents"]


def deque_reference(ds, feature: str, tokenizer, seq_len: int, batch_size: int, out_file: Path) -> int:
    """(c): the original algorithm, one token at a time, with only the final remainder dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    buffer, rows, count = deque(), [], 0
    for batch in ds.iter(batch_size=batch_size):
        for ids in tokenizer(batch[feature], add_special_tokens=False)["input_ids"]:
            buffer.extend(ids)
            buffer.append(eos)
            count += len(ids)
        while len(buffer) >= seq_len - 1:
            row = [bos] + [buffer.popleft() for _ in range(seq_len - 2)] + [buffer[0]]
            rows.append(row)
    pq.write_table(pa.table({"tokens": pa.array(rows, type=pa.list_(pa.int32()))}), out_file)
    return count


def timed_rounds(repeats: int, runs: dict) -> dict:
    """{name: (median seconds, token count)}. Each round runs every method once, so that load on a
    shared machine slows all of them alike."""
    seconds, counts = {name: [] for name in runs}, {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            counts[name] = run()
            seconds[name].append(time.perf_counter() - start)
    return {name: (statistics.median(seconds[name]), counts[name]) for name in runs}


def prepare_data(args, workdir: Path) -> str:
    if args.data is not None:
        return args.data
    if (TINYSTORIES / f"{args.split}-00000.parquet").exists():
        return str(TINYSTORIES)
    from delphi.data.stories import write_corpus

    print(f"TinyStories sample not found at {TINYSTORIES}: using the embedded story corpus")
    write_corpus(workdir / "corpus", train_size=5000, validation_size=5000)
    return str(workdir / "corpus")


def prepare_tokenizer(args, data: str, workdir: Path) -> str:
    if args.tokenizer is not None:
        return args.tokenizer
    from delphi.data.tokenizer import train_tokenizer

    out = workdir / "tokenizer"
    train_tokenizer(data, feature=args.feature, split="train", vocab_size=args.vocab_size, out_dir=out)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", help=f"dataset dir/file/hub id (default: {TINYSTORIES}, else embedded stories)"
    )
    parser.add_argument("--split", default="validation", help="split to tokenize (default validation)")
    parser.add_argument("--feature", default="story", help="text column (default story)")
    parser.add_argument("--tokenizer", help="tokenizer dir or hub id (default: train one on the train split)")
    parser.add_argument(
        "--vocab-size", type=int, default=4096, help="vocab of the trained tokenizer (default 4096)"
    )
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-deque", action="store_true", help="skip (c), the slow reference")
    args = parser.parse_args()

    import datasets
    import pyarrow.parquet as pq

    from delphi.data.splits import load_split
    from delphi.data.tokenizer import load_tokenizer

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = prepare_data(args, workdir)
        tokenizer_dir = prepare_tokenizer(args, data, workdir)
        tokenizer = load_tokenizer(tokenizer_dir)
        ds = load_split(data, args.split)
        texts = ds[args.feature][:]
        print(
            f"{len(texts)} documents of {data} [{args.split}], tokenizer {tokenizer_dir} (vocab {len(tokenizer)}), "
            f"seq_len {args.seq_len}, batch {args.batch_size}, {os.cpu_count()} CPUs, median of {args.repeats}"
        )

        out_dir, out_file = workdir / "delphi", workdir / "deque.parquet"
        runs = {
            "a": lambda: bare_tokenizer(tokenizer, texts, args.batch_size),
            "a'": lambda: bare_backend(tokenizer, texts, args.batch_size),
            "b": lambda: delphi_end_to_end(
                data, args.split, args.feature, tokenizer_dir, args.seq_len, args.batch_size, out_dir
            ),
            "c": lambda: deque_reference(
                ds, args.feature, tokenizer, args.seq_len, args.batch_size, out_file
            ),
        }
        if args.skip_deque:
            del runs["c"]
        results = timed_rounds(args.repeats, runs)
        if not args.skip_deque:
            ours = [
                r for f in sorted(out_dir.glob("*.parquet")) for r in pq.read_table(f).column(0).to_pylist()
            ]
            same = ours == pq.read_table(out_file).column(0).to_pylist()
            print(f"(b) and (c) rows identical: {same} ({len(ours)} sequences)")
            if not same:
                raise SystemExit("the deque reference disagrees with tokenize_dataset")

    counts = {count for _, count in results.values()}
    assert len(counts) == 1, f"the methods saw different token counts: {results}"
    labels = {
        "a": "(a)  tokenizer(batch), in memory",
        "a'": "(a') backend.encode_batch_fast",
        "b": "(b)  tokenize_dataset end to end",
        "c": "(c)  deque reference end to end",
    }
    speed = {key: count / seconds for key, (seconds, count) in results.items()}
    for key, (seconds, _) in results.items():
        print(f"{labels[key]:36s} {seconds:7.3f} s  {speed[key] / 1e6:6.2f} M tokens/s")
    print(f"(b)/(a) = {speed['b'] / speed['a']:.2f}   (target >= 0.8)")
    if "c" in speed:
        print(f"(b)/(c) = {speed['b'] / speed['c']:.2f}")


if __name__ == "__main__":
    main()
