"""Helpers every test file shares: the tiny Llama (its model section and a recipe of it, trained on the
`stories_data` fixture in conftest.py), running delphi as a real process, the check that a CLI
command failed with one line, and a free port for a launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from numerics import threads_under_test

REPO = Path(__file__).resolve().parents[1]
# the environment of a delphi process a test starts: this checkout importable, one torch thread (tiny models
# gain nothing from threads, and on a busy 2-core machine OpenMP spinning makes them 100x slower) unless
# DELPHI_TEST_THREADS asks for more (numerics.py)
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads_under_test())}

MODEL = {
    "architecture": "LlamaForCausalLM",
    "vocab_size": 384,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_hidden_layers": 1,
    "max_position_embeddings": 32,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}
# the tiny Mamba beside it, for the tests that open a checkpoint of each architecture in other tools
MAMBA_MODEL = {
    "architecture": "MambaForCausalLM",
    "vocab_size": 384,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}


def training_args(out_dir, **settings):
    """`TrainingArguments` for a test's own DelphiTrainer: on the CPU, no saving or evaluation by the Trainer
    (DelphiTrainer does both at its checkpoint steps), no reporting, no progress bar; `settings` win."""
    from transformers import TrainingArguments

    defaults = dict(save_strategy="no", eval_strategy="no", use_cpu=True, report_to=[], disable_tqdm=True)
    return TrainingArguments(output_dir=str(out_dir), **(defaults | settings))


def run_process(
    args: list, env_extra: dict | None = None, *, cwd=REPO, pythonpath=(), **kw
) -> subprocess.CompletedProcess:
    """`args` as a real process (the delphi script, `python -m delphi ...`, a launcher) run from `cwd`, with
    ENV, `pythonpath` folders importable too, and `env_extra` on top; output captured as text."""
    env = {**ENV, **(env_extra or {})}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], *map(str, pythonpath)])
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, **kw)


def write_recipe(path: Path, data_root: Path, out_dir: Path, **overrides) -> Path:
    """A tiny-Llama recipe on `data_root`; `overrides` set top-level keys or `section.key`."""
    recipe = {
        "model": dict(MODEL),
        "tokenizer": str(data_root / "tok"),
        "data": {"path": str(data_root / "data"), "validation_size": 24},
        "seq_len": 32,
        "batch_size": 8,
        "seeds": {"init": 7, "data": 11},
        "checkpoints": {"every": 5, "steps": [1, 2, 4]},
        "out_dir": str(out_dir),
        "training": {
            "max_steps": 12,
            "learning_rate": 5e-3,
            "warmup_steps": 2,
            "lr_scheduler_type": "cosine",
            "logging_steps": 1,
            "disable_tqdm": True,
        },
    }
    for key, value in overrides.items():
        section, _, sub = key.partition(".")
        if sub:
            recipe.setdefault(section, {})[sub] = value
        else:
            recipe[section] = value
    path.write_text(yaml.safe_dump(recipe))
    return path


def train_two_steps(data_root: Path, root: Path, name: str, model: dict) -> Path:
    """A real two-step run of `model` on `data_root`, checkpoints step1 and step2, in `root/name`: the runs
    the tests open in other tools (transformers 4, TransformerLens, nnsight, lm-evaluation-harness)."""
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    overrides = {
        "model": model,
        "training.max_steps": 2,
        "training.warmup_steps": 1,
        "checkpoints.steps": [1],
        "checkpoints.every": None,
    }
    train(load_recipe([write_recipe(root / f"{name}.yaml", data_root, root / name, **overrides)]))
    return root / name


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI in this process; it must exit 2 with one `delphi CMD: error:` line; return that line."""
    import pytest

    from delphi.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"delphi {argv[0]}: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def free_port() -> int:
    """A port nothing listens on now: `accelerate launch` otherwise takes 29500, which another run of the
    tests (or anything else) on the same machine may hold."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_training_after(recipe: Path, checkpoint: Path, env: dict, *, pause: float) -> None:
    """Start `python -m delphi.train recipe` and SIGKILL it `pause` seconds after `checkpoint` appears (in the
    steps after it, maybe mid-save): what a crash or an out-of-memory kill leaves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "delphi.train", str(recipe)], env=env, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while not checkpoint.exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(pause)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
