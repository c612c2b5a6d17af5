"""How long does `delphi dynamics` take on 20 checkpoints of a ~1M-parameter model, and how much memory?

Target (issue 22): under 60 s on 2 CPU cores with a 64 x 128 probe, holding one checkpoint and its probe
activations at a time. The run is real: the embedded corpus, a 2048-token tokenizer, 128-token sequences,
a 1.07M-parameter Llama (3 layers, hidden 128, untied head) trained 20 steps with a checkpoint at every
step. Built once under --workdir (reused by later calls); then `delphi dynamics RUN --sequences 64` runs in
a fresh process with --threads torch threads, timed end to end (imports, reading, measuring, table, the 3
default plots), its CPU time and peak resident memory from the kernel (the child's rusage). Beside it,
before and after, the work no measurement can skip (load each checkpoint, one forward and backward of the
probe) is timed in this process: on a shared machine the ratio says more than the seconds.

    python benchmarks/dynamics.py [--workdir DIR] [--threads 2] [--checkpoints 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODEL = {
    "architecture": "LlamaForCausalLM",
    "vocab_size": 2048,
    "hidden_size": 128,
    "intermediate_size": 344,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 3,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}


def build_run(root: Path, checkpoints: int) -> tuple[Path, Path]:
    """(run directory, tokenized dataset): trained once, reused while its folder exists."""
    import yaml

    run, data = root / "bench-1m", root / "dataset"
    if run.exists() and len([p for p in run.iterdir() if p.name.startswith("step")]) >= checkpoints:
        return run, data
    from delphi.data.sequences import tokenize_dataset
    from delphi.data.stories import write_corpus
    from delphi.data.tokenizer import train_tokenizer
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    shutil.rmtree(run, ignore_errors=True)
    if not data.exists():
        write_corpus(root / "corpus", train_size=2000, validation_size=200, seed=0)
        train_tokenizer(
            str(root / "corpus"), feature="story", split="train", vocab_size=2048, out_dir=root / "tok"
        )
        tokenize_dataset(str(root / "corpus"), feature="story", splits=["train", "validation"],
                         tokenizer=str(root / "tok"), seq_len=128, out_dir=data)  # fmt: skip
    recipe = {
        "name": "bench-1m",
        "model": MODEL,
        "tokenizer": str(root / "tok"),
        "data": {"path": str(data), "validation_size": 64},
        "seq_len": 128,
        "batch_size": 8,
        "seeds": {"init": 1, "data": 2},
        "checkpoints": {"every": 1},
        "out_dir": str(run),
        "training": {
            "max_steps": checkpoints,
            "learning_rate": 3e-3,
            "warmup_steps": 2,
            "disable_tqdm": True,
        },
    }
    path = root / "bench-1m.yaml"
    path.write_text(yaml.safe_dump(recipe))
    train(load_recipe([path]))
    return run, data


def bare_passes(run: Path, data: Path, checkpoints: int, sequences: int, threads: int) -> float:
    """Seconds for what no measurement can skip, in this process: load each checkpoint and run one forward
    and backward of the probe's loss (the same chunks), nothing else. The ratio of `delphi dynamics` to it
    says what the metrics, the table and the plots add, whatever else the machine is doing."""
    import pyarrow.parquet as pq
    import torch

    from delphi.dynamics.measure import CHUNK
    from delphi.evaluate.sources import load_model

    torch.set_num_threads(threads)
    rows = pq.read_table(data / "validation-00000.parquet").column("tokens").to_pylist()[:sequences]
    ids = torch.tensor([r[:128] for r in rows])
    started = time.perf_counter()
    for step in range(1, checkpoints + 1):
        model = load_model(run, f"step{step}")
        for start in range(0, len(ids), CHUNK):
            part = ids[start : start + CHUNK]
            model(input_ids=part, labels=part, use_cache=False).loss.backward()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the run is built and kept (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="delphi-bench-dynamics-"))
    root.mkdir(parents=True, exist_ok=True)
    run, data = build_run(root, args.checkpoints)

    from delphi.evaluate.sources import load_model
    from delphi.models import count_parameters

    parameters = count_parameters(load_model(run, f"step{args.checkpoints}"))[0]
    out = root / "dynamics-out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "delphi", "dynamics", str(run), "--probe", str(data),
               "--sequences", str(args.sequences), "--out", str(out)]  # fmt: skip
    load_before = os.getloadavg()[0]  # on a shared machine, what else was running says what the time means
    bare_before = bare_passes(run, data, args.checkpoints, args.sequences, args.threads)
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"delphi dynamics failed ({done.returncode}):\n{done.stderr[-3000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    bare_after = bare_passes(run, data, args.checkpoints, args.sequences, args.threads)
    rerun_started = time.perf_counter()
    subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    rerun = time.perf_counter() - rerun_started
    bare = (bare_before + bare_after) / 2
    figures = {
        "checkpoints": args.checkpoints,
        "parameters": parameters,
        "probe": f"{args.sequences} x 128",
        "threads": args.threads,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "bare_load_forward_backward_seconds": [round(bare_before, 2), round(bare_after, 2)],
        "ratio_to_bare": round(seconds / bare, 2),
        "rerun_seconds_all_done": round(rerun, 2),
        "target_seconds": 60,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cores": os.cpu_count(),
    }
    print(done.stdout.strip())
    print(
        f"delphi dynamics: {args.checkpoints} checkpoints of a {parameters:,}-parameter Llama, probe "
        f"{args.sequences} x 128, {args.threads} threads: {seconds:.1f} s wall, {cpu:.1f} s CPU (target < 60 s), "
        f"peak RSS {peak_mib:.0f} MiB; rerun with everything done: {rerun:.1f} s; load average before/after "
        f"{load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"beside it, loading each checkpoint and one forward + backward of the probe, nothing else: "
        f"{bare_before:.1f} s before, {bare_after:.1f} s after (dynamics / their mean = {seconds / bare:.2f})"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
