"""The `delphi` command (also `python -m delphi`): thin argparse faces over plain functions.

Heavy libraries are imported inside each command, so `delphi --help` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from delphi import __version__, quiet, signals
from delphi.errors import DelphiError

DEVICE_HELP = "torch device, e.g. cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)"


def _corpus(args: argparse.Namespace) -> None:
    from delphi.stories import write_corpus

    info = write_corpus(
        args.out_dir,
        train_size=args.train_size,
        validation_size=args.validation_size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    for split, path in info["files"].items():
        print(f"{split}: {info['counts'][split]} stories {'->' if info['written'] else 'already in'} {path}")


def _tokenizer(args: argparse.Namespace) -> None:
    from delphi.tokenizer import train_tokenizer

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


def _dataset(args: argparse.Namespace) -> None:
    from delphi.sequences import tokenize_dataset

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


def _train(args: argparse.Namespace) -> None:
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    summary = train(load_recipe(args.recipes, args.overrides), overwrite=args.overwrite)
    if not summary["main_process"]:
        return  # one summary per run, from the main process
    loss = summary["eval_loss"]
    if summary["complete_before"]:
        print(f"already complete, nothing to do: {summary['final_checkpoint']}")
    print(f"final validation loss: {'n/a' if loss is None else format(loss, '.4g')}")
    print(f"checkpoints ({len(summary['checkpoints'])}): {summary['out_dir']}")


def _validate(args: argparse.Namespace) -> None:
    from delphi.validate import format_table, validate_paths

    rows = validate_paths(args.paths)
    print(format_table(rows))
    if any(row["error"] for row in rows):
        raise DelphiError(f"{sum(bool(r['error']) for r in rows)} of {len(rows)} recipe(s) have errors")


def _generate(args: argparse.Namespace) -> None:
    from transformers.utils import logging as hf_logging

    from delphi.generate import generate

    hf_logging.disable_progress_bar()  # a weight-loading bar is noise next to the samples

    samples = generate(
        args.model,
        prompt=args.prompt,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        revision=args.revision,
        device=args.device,
    )
    if args.temperature == 0 and args.n > 1:
        print(
            f"delphi generate: --temperature 0 is greedy decoding: its {args.n} samples would all be the "
            "same, so it is shown once",
            file=sys.stderr,
        )
    for i, text in enumerate(samples):
        print(f"--- sample {i + 1}\n{text}")


def _logprobs(args: argparse.Namespace) -> None:
    from delphi.evaluate.logprobs import logprobs_for_checkpoints

    results = logprobs_for_checkpoints(
        args.model,
        args.branches,
        dataset=args.dataset,
        split=args.split,
        feature=args.feature,
        out_dir=args.out_dir,
        out_repo=args.out_repo,
        batch_size=args.batch_size,
        device=args.device,
    )
    for branch, info in results.items():
        mean = f", mean logprob {info['mean_logprob']:.4f}" if "mean_logprob" in info else ""
        print(f"{branch}: {info['status']}{mean} -> {', '.join(info['location'])}")


def _curves(args: argparse.Namespace) -> None:
    from delphi.evaluate.curves import expand_runs, plot_curves

    png, table = plot_curves(args.runs, args.out, title=args.title)
    print(f"loss curves of {len(expand_runs(args.runs))} run(s) -> {png} and {table}")


def _batches(args: argparse.Namespace) -> None:
    from delphi.batches import run_cli

    run_cli(args)


def _push(args: argparse.Namespace) -> None:
    from delphi.hub.publish import format_summary
    from delphi.hub.push import push_run

    summary = push_run(
        args.run_dir,
        args.repo,
        private=args.private,
        include_optimizer=args.include_optimizer,
        overwrite=args.overwrite,
    )
    print(f"uploaded: {', '.join(summary['uploaded']) or 'nothing'}")
    print(f"already on the hub: {', '.join(summary['unchanged']) or 'nothing'}")
    print(format_summary(summary, args.run_dir))
    if summary["failed"]:
        failed = ", ".join(summary["failed"])
        raise DelphiError(f"{len(summary['failed'])} branch(es) failed to upload: {failed}")
    if summary["manifest"] not in ("updated", "unchanged"):
        raise DelphiError(f"checkpoints.json on main could not be updated: {summary['manifest']}")


def _suite(args: argparse.Namespace) -> None:
    from delphi.suite.cli import run

    run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="delphi",
        description="Train tokenizers, tokenize corpora and train suites of small language models.",
    )
    parser.add_argument("--version", action="version", version=f"delphi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "corpus",
        help="write the embedded synthetic story corpus (train/validation parquet)",
        description="Generate the embedded, deterministic corpus of simple English stories: "
        "parquet files `train-00000.parquet` and `validation-00000.parquet` with column `story`. "
        "Same seed and sizes give byte-identical files.",
    )
    p.add_argument("--out-dir", "-o", required=True, help="directory to write the parquet files to")
    p.add_argument(
        "--train-size", type=int, default=10_000, help="stories in the train split (default 10000)"
    )
    p.add_argument(
        "--validation-size", type=int, default=1_000, help="stories in the validation split (default 1000)"
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out-dir")
    p.set_defaults(func=_corpus)

    p = sub.add_parser(
        "tokenizer",
        help="train a byte-level BPE tokenizer with <bos> <eos> <pad> at ids 0, 1, 2",
        description="Train a reversible GPT-2-style byte-level BPE tokenizer on one text feature of a "
        "dataset and save it so `transformers.AutoTokenizer.from_pretrained` loads it.",
    )
    p.add_argument("--in-dataset", "-i", required=True, help="local dir or file, or hub dataset id")
    p.add_argument("--feature", "-f", required=True, help="name of the text column, e.g. story")
    p.add_argument("--split", "-s", default="train", help="split, with optional slicing, e.g. 'train[:10%%]'")
    p.add_argument("--vocab-size", "-v", type=int, required=True, help="vocabulary size, specials included")
    p.add_argument("--out-dir", help="local directory to save the tokenizer to")
    p.add_argument("--out-repo", help="hub model repo to push the tokenizer to, e.g. org/stories-tokenizer")
    p.add_argument("--overwrite", action="store_true", help="replace a tokenizer already in --out-dir")
    p.set_defaults(func=_tokenizer)

    p = sub.add_parser(
        "dataset",
        help="tokenize a text dataset into fixed-length sequences (parquet shards)",
        description="Tokenize documents, join them with <eos>, and cut the stream into sequences of "
        "--seq-len tokens that start with <bos> and repeat the previous sequence's last token. "
        "Writes `{split}-{index:05d}.parquet` shards with one column `tokens`.",
    )
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
    p.set_defaults(func=_dataset)

    p = sub.add_parser(
        "train",
        help="train a model from YAML recipes (same as `python -m delphi.train`)",
        description="Train a model from YAML recipes, merged in order. For several processes use "
        "`accelerate launch [--config_file accelerate_configs/...] -m delphi.train RECIPE...`.",
    )
    p.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe YAML files, merged in order")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field with a YAML value, e.g. --set training.learning_rate=1e-3 (repeatable)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different run in out_dir (the old one is deleted once the new one has a checkpoint) "
        "and on the hub repo (hub.repo; its branches this run does not have are deleted at the end)",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "validate",
        help="check recipes and print their models' parameter counts (no weights are allocated)",
        description="Load every recipe under the given files/directories, build each model on the meta "
        "device, and print a table of architecture, parameters and tokens per step.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="recipe files or directories")
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "generate",
        help="sample text from a checkpoint (local folder or hub repo)",
        description="Sample continuations of a prompt from a trained model; deterministic for a given seed.",
    )
    p.add_argument("model", help="checkpoint folder, run directory (its latest checkpoint) or hub repo id")
    p.add_argument("--revision", help="checkpoint of a run directory or hub repo (branch), e.g. step400")
    p.add_argument(
        "--prompt", default="Once upon a time", help="text to continue (default: Once upon a time)"
    )
    p.add_argument(
        "-n",
        type=int,
        default=3,
        help="number of samples (default 3); greedy decoding (--temperature 0) has one sample, printed once",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=200, help="tokens to generate per sample (default 200)"
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="sampling temperature (default 0.8); 0 = greedy decoding: one sample, whatever -n",
    )
    p.add_argument(
        "--top-k", type=int, default=None, help="sample from the k most likely tokens only (k >= 1)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "logprobs",
        help="next-token log-probabilities of every token of a dataset, for each checkpoint",
        description="Score every sequence of a tokenized dataset with each checkpoint of a run (local run "
        "directory or hub repo with step* branches). Writes one dataset per checkpoint, column `logprobs` "
        "(NaN at position 0): OUT_DIR/BRANCH/SPLIT-00000.parquet and/or branch BRANCH of a hub dataset "
        "repo. Checkpoints already done are skipped.",
    )
    p.add_argument(
        "model", help="run directory, hub model repo id, or step folder (that one checkpoint of its run)"
    )
    p.add_argument("--branches", default="ALL", help="ALL (every step* checkpoint) or e.g. step1,step64")
    p.add_argument("--dataset", "-i", required=True, help="tokenized dataset: local dir or hub dataset id")
    p.add_argument(
        "--split", "-s", default="validation", help="split, with optional slicing (default validation)"
    )
    p.add_argument("--feature", "-f", default="tokens", help="column of token ids (default tokens)")
    p.add_argument("--out-dir", help="local directory for the results")
    p.add_argument("--out-repo", help="hub dataset repo to push the results to, one branch per checkpoint")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="sequences per forward pass (default 32)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(func=_logprobs)

    p = sub.add_parser(
        "curves",
        help="plot validation loss against tokens seen for one or more runs (PNG + CSV)",
        description="Read each checkpoint's checkpoint.json (nothing is recomputed) and plot validation "
        "loss against tokens seen (log x-axis), one line per recipe labelled by its name; the seeds of a "
        "recipe are drawn as their mean with a min-max band; colour follows model size, line style the "
        "architecture. Every run's numbers go to a CSV next to the PNG.",
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_OR_REPO",
        help="run directories, directories of runs, or hub model repo ids",
    )
    p.add_argument(
        "--out", "-o", default="curves.png", help="PNG to write (default curves.png; CSV beside it)"
    )
    p.add_argument("--title", help="figure title")
    p.set_defaults(func=_curves)

    from delphi.batches import add_arguments as add_batches_arguments

    p = sub.add_parser(
        "batches",
        help="what every optimizer step trained on, recomputed from the recipe and data (no training)",
        description="Recompute the data order of a run (a run directory, recipe file or hub repo) from its "
        "recipe and tokenized train split: for each step, every position of its global batch, the sequence's "
        "index in the train split and its tokens (with --decode, its text). --sequence lists the steps "
        "that trained on a sequence; --stat writes a function of each step's tokens.",
    )
    add_batches_arguments(p)
    p.set_defaults(func=_batches)

    p = sub.add_parser(
        "push",
        help="publish a run's local checkpoints to the hub (each on branch step{N}, the final one on main)",
        description="Upload every complete checkpoint of RUN_DIR that is missing or different on the hub, "
        "verified file by file; running it again uploads nothing. Optimizer state stays local unless "
        "--include-optimizer. The token comes from HF_TOKEN or `hf auth login`.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run's out_dir (holding step*/ folders)")
    p.add_argument("--repo", required=True, help="hub model repo, e.g. org/stories-llama2-100k")
    p.add_argument("--private", action="store_true", help="create the repo as private if it does not exist")
    p.add_argument(
        "--include-optimizer",
        action="store_true",
        help="also upload optimizer/scheduler/RNG state where a checkpoint still has it (to resume from the hub)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different run the repo holds (its branches this run does not have are deleted)",
    )
    p.set_defaults(func=_push)

    from delphi.hub import verify

    p = sub.add_parser(
        "verify",
        help="check published runs on the hub from metadata alone (no weights downloaded); exit 1 if wrong",
        description="Check each repo's branches, their checkpoint.json, weights hashes, main and the "
        "manifest checkpoints.json; one line per problem, exit 0 when all is well, 1 when not.",
    )
    verify.add_arguments(p)
    p.set_defaults(func=verify.run)

    from delphi.suite.cli import add_arguments as add_suite_arguments

    p = sub.add_parser(
        "suite",
        help="train every run of a suite (recipes x seeds) to completion; rerun to finish; --status",
        description="Train every recipe under PATH (x --seeds), each as its own `delphi train` process with "
        "its log in its out_dir, up to --jobs at once. Complete runs are skipped, partial ones resume, a "
        "failed one does not stop the others; rerunning the same command finishes the suite.",
    )
    add_suite_arguments(p)
    p.set_defaults(func=_suite)

    return parser


def main(argv: list[str] | None = None) -> None:
    """Run one command; exit 0 on success, 2 on a DelphiError, 130 on Ctrl-C, 143 on SIGTERM, 141 when
    the reader of its output went away (`| head`).

    Interruptions are exceptions, so every command cleans up as it does after an error (a training
    run that has no checkpoint yet puts its out_dir back as it was). With several processes on one
    machine, only the first of them prints the error: they all reached the same one.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet.quiet_http_requests()
    parser = build_parser()
    args = parser.parse_args(argv)
    signals.install()
    speaks = os.environ.get("LOCAL_RANK", "0") == "0"
    try:
        code = args.func(args)  # None, or an exit status the command's result decides (delphi verify)
        sys.stdout.flush()  # here, so that a reader gone away is seen below and not at interpreter exit
        if code:
            sys.exit(code)
    except DelphiError as e:
        if speaks:
            print(f"delphi {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        signals.handled()
        if speaks:
            print(f"delphi {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)
    except signals.Stopped as e:
        signals.handled()
        if speaks:
            print(f"delphi {args.command}: stopped by SIGTERM; saved checkpoints are intact", file=sys.stderr)
        sys.exit(128 + e.signum)
    except BrokenPipeError:
        # the reader stopped early (`delphi batches ... | head`): end as `yes | head` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        sys.exit(128 + signal.SIGPIPE)


if __name__ == "__main__":
    main()
