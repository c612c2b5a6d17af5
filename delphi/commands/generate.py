"""`delphi generate`: sample text from a checkpoint."""

from __future__ import annotations

import argparse
import sys

HELP = "sample text from a checkpoint (local folder or hub repo)"
DESCRIPTION = "Sample continuations of a prompt from a trained model; deterministic for a given seed."
DEVICE_HELP = "torch device, e.g. cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)"


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> None:
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
