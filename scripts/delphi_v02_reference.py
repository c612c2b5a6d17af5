"""Regenerate tests/assets/delphi-v0.2: what the ORIGINAL delphi v0.2 code trains on a small fixed dataset.

tests/test_delphi_v02.py checks that delphi with recipes/stories/base-delphi-v0.2.yaml ends within 1e-6 of
these weights. The reference must come from the original code itself, run once in its own environment,
not from delphi's idea of it. Steps (CPU only, no network beyond the package registry and the git remote):

1. build the dataset with *this* delphi from tests/assets/delphi-v0.2/case.json (embedded story corpus ->
   byte-level BPE tokenizer -> fixed-length token sequences), exactly as the test rebuilds it;
2. install the original delphi (tag v0.2, commit af79e9e) into its own virtual environment, with the pins
   that cannot install next to today's torch and numpy loosened (PIN_CHANGES, EXTRA_PINS below);
3. train it there with case.json's `original_config` on one CPU thread, recording each step's loss and lr
   (a wrapper around its `train_step`; nothing of its computation is changed);
4. write original_weights.safetensors (its final model's state_dict) and original_run.json (steps, the data
   fingerprint, versions, pins, command) next to case.json.

    python scripts/delphi_v02_reference.py --venv /tmp/delphi-v0.2-venv \\
        [--original-repo https://github.com/delphi-suite/delphi] [--out tests/assets/delphi-v0.2]

Build the venv outside the repository: nothing of the original's code is committed here. An existing venv
with the original installed is reused. The original is Apache-2.0 licensed (its LICENSE file).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "tests" / "assets" / "delphi-v0.2"
ORIGINAL_REPO = "https://github.com/delphi-suite/delphi"
ORIGINAL_TAG = "v0.2"
ORIGINAL_COMMIT = "af79e9ea5de9a2e588e7793c01d8b70e61d91d85"
# The original's pyproject pins torch==2.1.2, which has no wheel for today's Python/numpy stack; any torch
# since then runs its code. The same torch as delphi's makes the two runs comparable to fp32 rounding.
PIN_CHANGES = {"torch==2.1.2": "torch>=2.1.2"}
# Not pinned by the original but needed for its pins to work today: its datasets 2.16 fails on numpy 2 and
# on newer pandas/pyarrow; its wandb 0.16 imports pkg_resources (gone from setuptools 81), while torch 2.13
# needs setuptools>=77.0.3.
EXTRA_PINS = ["numpy<2", "pandas==2.2.3", "pyarrow==17.*", "setuptools>=77.0.3,<81"]
WEIGHTS = "original_weights.safetensors"
RUN_RECORD = "original_run.json"


def load_case(asset: Path = ASSET) -> dict:
    return json.loads((asset / "case.json").read_text())


def build_data(case: dict, root: Path) -> tuple[Path, Path]:
    """(tokenizer dir, token dataset dir) built by delphi from the case; the same case gives the same tokens."""
    from delphi.data.sequences import tokenize_dataset
    from delphi.data.stories import write_corpus
    from delphi.data.tokenizer import train_tokenizer

    corpus, tokenizer, data = root / "corpus", root / "tokenizer", root / "data"
    write_corpus(corpus, **case["corpus"])
    train_tokenizer(str(corpus), feature="story", split="train", out_dir=tokenizer, **case["tokenizer"])
    tokenize_dataset(
        str(corpus),
        feature="story",
        splits=["train", "validation"],
        tokenizer=str(tokenizer),
        seq_len=case["seq_len"],
        out_dir=data,
    )
    return tokenizer, data


def data_fingerprint(data: Path) -> dict:
    """{split: {sequences, sha256 of the int32 token ids in row order}}: what both trainings read."""
    import numpy as np

    from delphi.train.data import load_token_split

    out = {}
    for split in ("train", "validation"):
        tokens = np.asarray(load_token_split(data, split)["tokens"], dtype="<i4")
        out[split] = {"sequences": len(tokens), "sha256": hashlib.sha256(tokens.tobytes()).hexdigest()}
    return out


def original_config(case: dict, data: Path, out_dir: Path) -> dict:
    config = json.loads(json.dumps(case["original_config"]))
    config["dataset"]["path"] = str(data)
    config["out_dir"] = str(out_dir)
    return config


# ---------------------------------------------------------------- the original's environment


def _run(cmd: list[str], **kwargs) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def _venv_has_original(python: Path) -> bool:
    if not python.exists():
        return False
    probe = "import delphi, transformers; assert delphi.__version__ == '0.2'; print(transformers.__version__)"
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, env=_clean_env(), cwd="/"
    )
    return result.returncode == 0


def _clean_env() -> dict:
    """No PYTHONPATH (it would put this repo's `delphi` in front of the original's), offline, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
        PYTHONHASHSEED="0",
    )
    return env


def setup_original_venv(venv: Path, original_repo: str, work: Path) -> Path:
    """The venv's python, with torch (this environment's version, CPU) and the original delphi v0.2 installed."""
    import torch

    python = venv / "bin" / "python"
    if _venv_has_original(python):
        print(f"reusing {venv} (the original delphi 0.2 is installed)")
        return python
    source = work / "delphi-v0.2-src"
    _run(["git", "clone", "--quiet", original_repo, str(source)])
    _run(["git", "-C", str(source), "checkout", "--quiet", ORIGINAL_TAG])
    head = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if head != ORIGINAL_COMMIT:
        sys.exit(f"{original_repo} tag {ORIGINAL_TAG} is {head}, expected {ORIGINAL_COMMIT}")
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text()
    for old, new in PIN_CHANGES.items():
        if f'"{old}"' not in text:
            sys.exit(f"{pyproject} has no {old}: not the v0.2 the pins were worked out for")
        text = text.replace(f'"{old}"', f'"{new}"')
    pyproject.write_text(text)
    _run([sys.executable, "-m", "venv", str(venv)])
    env = _clean_env() | {"TORCH_VERSION": torch.__version__.split("+")[0]}
    # torch first, the way delphi installs it (a CPU build on a machine without a GPU), then pinned exactly so
    # that resolving the original's dependencies can never swap it for another build
    _run([str(python), str(REPO / "scripts" / "install_torch.py")], env=env)
    installed = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    _run(
        [str(python), "-m", "pip", "install", "--quiet", str(source), f"torch=={installed}", *EXTRA_PINS],
        env=env,
    )
    return python


# ---------------------------------------------------------------- inside the original's environment


def inside_original(config_path: str, out: str) -> None:
    """Runs with the original's venv: its run_training on the config, then the weights and per-step record."""
    import logging

    import safetensors.torch
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import datasets
    import transformers

    # this venv's `delphi` is the original v0.2 (not this repository's package)
    delphi = importlib.import_module("delphi")
    training = importlib.import_module("delphi.train.training")
    build_config = importlib.import_module("delphi.train.config").build_config_from_files_and_overrides
    estimate_loss = importlib.import_module("delphi.train.utils").estimate_loss
    assert delphi.__version__ == "0.2", delphi.__file__
    config = build_config([Path(config_path)], {})
    steps = []
    original_train_step = training.train_step

    def recording_train_step(*, model_training_state, **kwargs):
        original_train_step(model_training_state=model_training_state, **kwargs)
        mts = model_training_state
        steps.append({"step": mts.iter_num + 1, "lr": mts.lr, "loss": mts.train_loss})

    training.train_step = recording_train_step
    mts, run_context = training.run_training(config)
    model = mts.model
    # the original's own validation estimate on the final model (its checkpoint evaluation, approximate by
    # design: the first eval_iters x (batch_size // eval_iters) sequences)
    validation = config.dataset.load_validation()
    eval_iters = min(config.eval_iters, len(validation) // config.batch_size)
    val_loss = estimate_loss(
        model=model,
        eval_iters=config.eval_iters,
        batch_size=config.batch_size,
        split_to_ds={"val": validation},
        device=run_context.device,
        feature_name=config.dataset.feature,
    )["val"]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    safetensors.torch.save_file(
        state, out_dir / WEIGHTS, metadata={"code": f"delphi {ORIGINAL_TAG} ({ORIGINAL_COMMIT})"}
    )
    record = {
        "steps": steps,
        "final_validation": {
            "sequences": eval_iters * (config.batch_size // eval_iters),
            "loss": val_loss,
        },
        "versions": {
            "delphi": delphi.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
            "numpy": __import__("numpy").__version__,
        },
    }
    (out_dir / "inside.json").write_text(json.dumps(record))


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--venv", type=Path, required=True, help="the original's virtualenv (created if missing)"
    )
    parser.add_argument(
        "--original-repo", default=ORIGINAL_REPO, help="git URL or path of delphi-suite/delphi"
    )
    parser.add_argument("--out", type=Path, default=ASSET, help="the asset folder (holds case.json)")
    parser.add_argument("--inside-original", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside_original:
        inside_original(*args.inside_original)
        return
    if args.venv.resolve().is_relative_to(REPO):
        sys.exit(f"--venv {args.venv} is inside the repository; put the original's environment outside it")

    case = load_case(args.out)
    with tempfile.TemporaryDirectory(prefix="delphi-v0.2-") as tmp:
        work = Path(tmp)
        _, data = build_data(case, work)
        fingerprint = data_fingerprint(data)
        config_path = work / "original_config.json"
        config_path.write_text(json.dumps(original_config(case, data, work / "original-out"), indent=2))
        python = setup_original_venv(args.venv.resolve(), args.original_repo, work)
        result = work / "result"
        env = _clean_env() | {"HF_HOME": str(work / "hf_home")}
        _run(
            [str(python), str(Path(__file__).resolve()), "--venv", str(args.venv), "--inside-original",
             str(config_path), str(result)],
            env=env, cwd=work,
        )  # fmt: skip
        inside = json.loads((result / "inside.json").read_text())
        freeze = subprocess.run(
            [str(python), "-m", "pip", "freeze", "--all", "--exclude", "delphi"],
            capture_output=True,
            text=True,
            env=env,
        ).stdout.split()
        shutil.copyfile(result / WEIGHTS, args.out / WEIGHTS)
    record = {
        "original": {
            "repo": ORIGINAL_REPO,
            "tag": ORIGINAL_TAG,
            "commit": ORIGINAL_COMMIT,
            "license": "Apache-2.0",
        },
        "pins": {"changed": PIN_CHANGES, "added": EXTRA_PINS},
        "environment": freeze,
        "command": "python scripts/delphi_v02_reference.py --venv VENV [--original-repo URL]",
        "data": fingerprint,
        **inside,
    }
    (args.out / RUN_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out / WEIGHTS} and {args.out / RUN_RECORD}: {len(inside['steps'])} steps, final loss "
          f"{inside['steps'][-1]['loss']:.6f}")  # fmt: skip


if __name__ == "__main__":
    main()
