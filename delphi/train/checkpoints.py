"""What a checkpoint folder is, how it is written atomically, and how the newest resumable one is found.

`{out_dir}/step{N}/` (Pythia naming; the hub branch of a checkpoint is also `step{N}`) holds:

- `model.safetensors`, `config.json` (+ `generation_config.json`): `AutoModelForCausalLM.from_pretrained`
- the tokenizer files: `AutoTokenizer.from_pretrained`
- the run's own files (the recipe, `run_context.json`, ...)
- `trainer_state.json` and `training_args.bin` (transformers' names)
- resume state: `optimizer.pt`, `scheduler.pt`, `rng_state*.pth` (+ `scaler.pt`); kept for the newest
  checkpoint only by default, since it is 2-3x the model's size and only needed to resume
- `checkpoint.json`: step, tokens seen, losses, ...; written last: a folder without it is not a checkpoint

A checkpoint is written into `{out_dir}/.step{N}.tmp`, flushed to disk, then renamed into place, so a
run killed at any moment leaves either a complete `step{N}` or a hidden temp folder that the next
start deletes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import delphi
from delphi.errors import DelphiError

logger = logging.getLogger(__name__)

META_NAME = "checkpoint.json"
TRAINER_STATE_NAME = "trainer_state.json"
_STEP_DIR = re.compile(r"^step(\d+)$")
_TEMP_DIR = re.compile(r"^\.step\d+\.(tmp|old)$")
# transformers' file names for what only resuming needs
_RESUME_STATE = re.compile(r"^(optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth)$")


def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    """`{out_dir}/step{step}`: where the checkpoint of `step` lives (also its hub branch name)."""
    return Path(out_dir) / f"step{step}"


def temp_checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    """`{out_dir}/.step{step}.tmp`: where the checkpoint of `step` is written before it is published."""
    return Path(out_dir) / f".step{step}.tmp"


def is_complete(folder: str | os.PathLike) -> bool:
    """A checkpoint is complete once its `checkpoint.json` exists (it is written last)."""
    return (Path(folder) / META_NAME).is_file()


def has_resume_state(folder: str | os.PathLike) -> bool:
    """True if training can resume from `folder`: optimizer, scheduler and trainer state are all there."""
    folder = Path(folder)
    has_optimizer = (folder / "optimizer.pt").is_file() or (folder / "optimizer.bin").is_file()
    return has_optimizer and (folder / "scheduler.pt").is_file() and (folder / TRAINER_STATE_NAME).is_file()


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in `out_dir` as (step, folder), oldest first; incomplete folders are ignored."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for entry in out_dir.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and entry.is_dir() and is_complete(entry):
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_resumable(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in `out_dir` that still has its optimizer state, or None."""
    for _, folder in reversed(list_checkpoints(out_dir)):
        if has_resume_state(folder):
            return folder
    return None


def read_checkpoint_meta(folder: str | os.PathLike) -> dict:
    """The `checkpoint.json` of a checkpoint folder, with a clear error if it is missing or unreadable."""
    path = Path(folder) / META_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DelphiError(f"{str(folder)!r} is not a complete checkpoint: {META_NAME} is missing") from e
    except (OSError, ValueError) as e:
        raise DelphiError(f"cannot read {str(path)!r}: {e}") from e


def remove_stale_temp_dirs(out_dir: str | os.PathLike) -> list[Path]:
    """Delete `.step*.tmp` / `.step*.old` folders left by a run killed while saving; returns what was removed."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    stale = [entry for entry in out_dir.iterdir() if _TEMP_DIR.match(entry.name) and entry.is_dir()]
    for entry in stale:
        logger.info("removing unfinished checkpoint %s", entry)
        shutil.rmtree(entry)
    return stale


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` and flush it to disk."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


def publish_checkpoint(temp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> Path:
    """Flush `temp_dir` to disk and rename it to `final_dir` (replacing an older folder of that name)."""
    temp_dir, final_dir = Path(temp_dir), Path(final_dir)
    if not is_complete(temp_dir):
        raise DelphiError(f"refusing to publish {str(temp_dir)!r}: it has no {META_NAME}")
    _fsync_tree(temp_dir)
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final_dir, old)
    os.replace(temp_dir, final_dir)
    _fsync_dir(final_dir.parent)
    if old is not None:
        shutil.rmtree(old)
    return final_dir


def is_resume_state(path: str) -> bool:
    """Optimizer, scheduler, scaler and RNG state (a file name, not in a subfolder): what resume needs."""
    return "/" not in path and _RESUME_STATE.match(path) is not None


def drop_resume_state(folder: str | os.PathLike) -> list[str]:
    """Delete optimizer/scheduler/scaler/RNG state from a checkpoint folder (never the model); returns names."""
    removed = []
    for entry in Path(folder).iterdir():
        if entry.is_file() and is_resume_state(entry.name):
            entry.unlink()
            removed.append(entry.name)
    return sorted(removed)


# ---- run context: what produced a checkpoint, minus anything private ----

_PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "tokenizers",
    "huggingface_hub",
    "safetensors",
    "numpy",
    "pyarrow",
    "mambapy",
    "mamba-ssm",
    "causal-conv1d",
)
# a word of a name (split on - and _) that marks a secret: HF_TOKEN, --hub-token, WANDB_API_KEY, ...
_SECRET_NAME = re.compile(
    r"(^|[-_])(token|api[-_]?key|private[-_]?key|access[-_]?key|secret|password|passwd|credentials?)($|[-_])",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{8,}")
_URL_CREDENTIALS = re.compile(r"(://)[^/\s@]+@")
REDACTED = "<redacted>"


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def scrub_argv(argv: list[str], environ: dict[str, str] | None = None) -> list[str]:
    """`argv` with secrets replaced by `<redacted>`.

    Redacts: values of secret-looking environment variables (names with a word TOKEN, API_KEY, SECRET,
    PASSWORD, ...)
    wherever they appear; `hf_...` tokens; the value of secret-looking options (`--hub-token X`,
    `--api_key=X`, `HF_TOKEN=X`); credentials in URLs (`https://user:pass@host`).
    """
    environ = os.environ if environ is None else environ
    secrets = sorted(
        (v for k, v in environ.items() if _SECRET_NAME.search(k) and len(v) >= 6),
        key=len,
        reverse=True,
    )
    scrubbed: list[str] = []
    redact_next = False
    for arg in argv:
        if redact_next:
            scrubbed.append(REDACTED)
            redact_next = False
            continue
        for secret in secrets:
            arg = arg.replace(secret, REDACTED)
        arg = _SECRET_VALUE.sub(REDACTED, arg)
        arg = _URL_CREDENTIALS.sub(rf"\g<1>{REDACTED}@", arg)
        name, sep, _ = arg.partition("=")
        if _SECRET_NAME.search(name.lstrip("-")) and (name.startswith("-") or sep):
            if sep:
                arg = f"{name}={REDACTED}"
            else:
                redact_next = True
        scrubbed.append(arg)
    return scrubbed


def _git_state(cwd: str | os.PathLike) -> dict | None:
    """Commit and dirty flag (tracked files only) of the git checkout containing `cwd`, if any."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def run_context(*, world_size: int | None = None, cwd: str | os.PathLike | None = None) -> dict:
    """Versions, device, world size, git state and (scrubbed) command line of this run; no host names.

    Stored with every checkpoint (`run_context.json`) so a result can be traced to the code that made it.
    """
    import torch

    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "packages": {"delphi": delphi.__version__} | {name: _package_version(name) for name in _PACKAGES},
        "device": _device(),
        "world_size": world_size,
        "torch_num_threads": torch.get_num_threads(),  # CPU results are bitwise equal only at the same count
        "git": _git_state(Path.cwd() if cwd is None else cwd),
        "argv": scrub_argv(list(sys.argv)),
    }
