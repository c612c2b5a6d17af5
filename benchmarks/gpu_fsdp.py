"""FSDP on GPUs, checked for real: parameters really sharded, and step folders resumable across layouts.

    python benchmarks/gpu_fsdp.py --work /tmp/gpu-work --nproc 2      # (run by benchmarks/gpu_check.sh)

Expects `--work` to hold `tok/` and `data/` (a delphi tokenizer, vocab 4096, and 256-token sequences).
Runs, all fp32 so that losses compare closely:
  A  FSDP over --nproc processes, 12 steps: each rank reports the size of its parameter shards;
  B  one process, 12 steps (the reference);
  C  FSDP stopped after step 4, resumed on one process;
  D  one process stopped after step 4, resumed under FSDP.
Prints the shard sizes and the largest relative loss difference of A, C and D against B, and exits
non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]


class ShardReport(TrainerCallback):
    """Writes, per rank, how many parameter elements it holds locally (FSDP2 parameters are DTensors)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        local = total = 0
        for p in model.parameters():
            total += p.numel()
            local += p.to_local().numel() if hasattr(p, "to_local") else p.numel()
        rank = int(os.environ.get("RANK", "0"))
        Path(args.output_dir, f"shards-rank{rank}.json").write_text(
            json.dumps({"local": local, "total": total})
        )


class StopAt4(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:
            control.should_training_stop = True


def recipe(work: Path, name: str, callbacks: list[str]) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "architecture": "LlamaForCausalLM",
                    "vocab_size": 4096,
                    "hidden_size": 256,
                    "intermediate_size": 688,
                    "num_attention_heads": 8,
                    "num_key_value_heads": 4,
                    "num_hidden_layers": 4,
                    "max_position_embeddings": 256,
                    "bos_token_id": 0,
                    "eos_token_id": 1,
                    "pad_token_id": 2,
                    "tie_word_embeddings": False,
                },  # fmt: skip
                "tokenizer": str(work / "tok"),
                "data": {"path": str(work / "data"), "validation_size": 32},
                "seq_len": 256,
                "batch_size": 16,
                "seeds": {"init": 3, "data": 4},
                "checkpoints": {"every": 4, "keep_optimizer": "all"},
                "out_dir": str(work / name),
                "callbacks": callbacks,
                "training": {"max_steps": 12, "learning_rate": 1e-3, "warmup_steps": 2, "logging_steps": 1},
            }
        )
    )
    return path


def run(command: list, label: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True)
    print(f"--- {label}: exit {done.returncode}")
    if done.returncode != 0:
        print(done.stderr[-4000:])
        raise SystemExit(f"{label} failed")


def losses(out_dir: Path) -> dict[int, float]:
    newest = max(
        (p for p in out_dir.glob("step*") if (p / "checkpoint.json").is_file()), key=lambda p: int(p.name[4:])
    )
    history = json.loads((newest / "trainer_state.json").read_text())["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    work = args.work
    fsdp = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", REPO / "accelerate_configs/fsdp.yaml",
            "--num_processes", str(args.nproc), "-m", "delphi.train"]  # fmt: skip
    single = [sys.executable, "-m", "delphi", "train"]
    report, stop = "benchmarks.gpu_fsdp:ShardReport", "benchmarks.gpu_fsdp:StopAt4"
    failures = []

    run([*fsdp, recipe(work, "A", [report])], "A: FSDP")
    for rank in range(args.nproc):
        shards = json.loads((work / "A" / f"shards-rank{rank}.json").read_text())
        print(f"rank {rank}: holds {shards['local']:,} of {shards['total']:,} parameter elements")
        if args.nproc > 1 and shards["local"] > 0.75 * shards["total"]:
            failures.append(f"rank {rank} holds {shards['local']} of {shards['total']}: not sharded")
    step = work / "A" / "step12"
    names = sorted(p.name for p in step.iterdir())
    print("A step12 holds:", ", ".join(names))
    if "pytorch_model_fsdp.bin" in names or "model.safetensors" not in names:
        failures.append("an FSDP step folder must hold the weights once, as model.safetensors")

    run([*single, recipe(work, "B", [])], "B: one process")
    run([*fsdp, recipe(work, "C", [stop])], "C1: FSDP to step 4")
    run([*single, recipe(work, "C", [])], "C2: resumed on one process")
    run([*single, recipe(work, "D", [stop])], "D1: one process to step 4")
    run([*fsdp, recipe(work, "D", [])], "D2: resumed under FSDP")
    reference = losses(work / "B")
    for name in ("A", "C", "D"):
        other = losses(work / name)
        worst = max(abs(other[s] - reference[s]) / abs(reference[s]) for s in reference)
        print(
            f"{name} vs B: steps {sorted(other) == sorted(reference)}, largest relative loss difference {worst:.2e}"
        )
        if sorted(other) != sorted(reference) or worst > 1e-3:
            failures.append(f"{name}: losses differ from one process by {worst:.2e}")
    print("FSDP checks:", "OK" if not failures else "FAILED: " + "; ".join(failures))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
