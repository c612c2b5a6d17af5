"""Suite-scale timings, each against the plain way of doing the same work.

    python benchmarks/suite.py                   # all measurements
    python benchmarks/suite.py --steps 60        # longer runs (less weight on process start-up)

(1) `delphi suite` vs a loop: four tiny recipes x 2 seeds trained by `delphi suite --jobs 2`, against
the same eight runs trained one after another by a plain `for ...; do delphi train ...; done` loop
(default threads, as a user's shell loop would run them). Prints both wall times and the ratio;
the target is suite / loop <= 0.75 on a 2-core machine. Both train on the embedded story corpus,
tokenized here once, so nothing is downloaded. Other load on the machine makes both slower: run it
on a quiet machine, or read the ratio as noisy.

(2) `delphi batches` over every step of a 10-epoch stories-sized index (900k sequences, batch 256): the
seconds taken, by the functions and by the command (benchmarks/batches.py, which also runs alone).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Four tiny recipes (about 6k to 40k parameters): Llama of three widths and a Mamba.
LLAMA = {
    "architecture": "LlamaForCausalLM",
    "vocab_size": 384,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_hidden_layers": 2,
    "max_position_embeddings": 64,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}
MAMBA = {
    "architecture": "MambaForCausalLM",
    "vocab_size": 384,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "state_size": 8,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}
MODELS = {
    "llama-16": {**LLAMA, "hidden_size": 16, "intermediate_size": 32},
    "llama-32": {**LLAMA, "hidden_size": 32, "intermediate_size": 64},
    "llama-48": {**LLAMA, "hidden_size": 48, "intermediate_size": 128},
    "mamba-16": MAMBA,
}
SEEDS = (0, 1)


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run `cmd` to completion (failing loudly); its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds


# ---------------------------------------------------------------- shared inputs


def prepare(root: Path, steps: int) -> Path:
    """Tokenizer, tokenized data and the suite's recipes under `root`; returns the recipe folder."""
    from delphi.data.sequences import tokenize_dataset
    from delphi.data.stories import write_corpus
    from delphi.data.tokenizer import train_tokenizer

    write_corpus(root / "corpus", train_size=2000, validation_size=200, seed=0)
    train_tokenizer(
        str(root / "corpus"), feature="story", split="train", vocab_size=384, out_dir=root / "tok"
    )
    tokenize_dataset(
        str(root / "corpus"),
        feature="story",
        splits=["train", "validation"],
        tokenizer=str(root / "tok"),
        seq_len=64,
        out_dir=root / "data",
    )
    recipes = root / "recipes"
    recipes.mkdir()
    for name, model in MODELS.items():
        recipe = {
            "model": model,
            "tokenizer": str(root / "tok"),
            "data": {"path": str(root / "data"), "validation_size": 64},
            "seq_len": 64,
            "batch_size": 16,
            "seeds": {"init": 7, "data": 11},
            "checkpoints": {"every": max(1, steps // 2), "steps": [1, 2, 4, 8]},
            "out_dir": "out/{name}",
            "training": {"max_steps": steps, "learning_rate": 3e-3, "warmup_steps": 5, "disable_tqdm": True},
        }
        (recipes / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    return recipes


# ---------------------------------------------------------------- measurements
# Each takes the prepared workspace and prints its own figures; main() runs them in order.


def suite_vs_loop(root: Path, recipes: Path, jobs: int, loop_threads: int | None) -> None:
    """`delphi suite --jobs N` against a sequential `delphi train` loop over the same runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("OMP_NUM_THREADS", None)  # the suite sets its own per run
    loop_env = dict(env)  # by default as a user's shell loop runs: torch's default thread count
    if loop_threads:
        loop_env["OMP_NUM_THREADS"] = str(loop_threads)

    loop_dir = root / "loop"
    loop_dir.mkdir()
    started = time.perf_counter()
    for file in sorted(recipes.glob("*.yaml")):
        for k in SEEDS:
            sets = [f"seeds.init={7 + k}", f"seeds.data={11 + k}", f"name={file.stem}-seed{k}"]
            cmd = [sys.executable, "-m", "delphi", "train", str(file)]
            run([*cmd, *(a for s in sets for a in ("--set", s))], loop_dir, loop_env)
    loop = time.perf_counter() - started

    suite_dir = root / "suite"
    suite_dir.mkdir()
    seeds = [str(k) for k in SEEDS]
    suite = run(
        [sys.executable, "-m", "delphi", "suite", str(recipes), "--seeds", *seeds, "--jobs", str(jobs)],
        suite_dir,
        env,
    )
    n = len(MODELS) * len(SEEDS)
    print(f"{n} runs ({len(MODELS)} recipes x {len(SEEDS)} seeds) on {os.cpu_count()} cores")
    threads = f"{loop_threads} thread(s)" if loop_threads else "default threads"
    print(f"  delphi train loop, one after another  {loop:8.1f} s   ({threads})")
    print(f"  delphi suite --jobs {jobs}                {suite:8.1f} s")
    print(f"  suite / loop                          {suite / loop:8.3f}   (target <= 0.75)")
    # the same eight runs: final validation losses agree (to float noise: the thread counts differ)
    from delphi.run_status import run_status

    gaps = []
    for d in sorted((suite_dir / "out").iterdir()):
        ours, theirs = run_status(d), run_status(loop_dir / "out" / d.name)
        assert ours.done and theirs.done, d.name
        gaps.append(abs(ours.eval_loss - theirs.eval_loss))
    print(f"  largest final val-loss gap, suite vs loop: {max(gaps):.2e} over {len(gaps)} runs")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run (default 40)")
    parser.add_argument("--jobs", type=int, default=2, help="delphi suite --jobs (default 2)")
    parser.add_argument(
        "--loop-threads",
        type=int,
        help="OMP_NUM_THREADS for the loop's runs (default: unset, torch's default)",
    )
    parser.add_argument("--keep", help="keep the workspace in this folder instead of a temporary one")
    parser.add_argument("--only", choices=["suite", "batches"], help="run one of the two measurements")
    args = parser.parse_args()

    if args.only != "batches":
        print("(1) delphi suite against a delphi train loop")
        root = Path(args.keep or tempfile.mkdtemp(prefix="delphi-suite-bench-"))
        root.mkdir(parents=True, exist_ok=True)
        try:
            recipes = prepare(root, args.steps)
            suite_vs_loop(root, recipes, args.jobs, args.loop_threads)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    if args.only != "suite":
        print("(2) delphi batches over a 10-epoch stories-sized index")
        sys.path.insert(0, str(REPO / "benchmarks"))
        import batches

        batches.main(["--repeats", "1"])


if __name__ == "__main__":
    main()
