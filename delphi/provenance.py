"""Where a checkpoint came from: delphi's version and source commit, package versions, device, world
size, the git state of the directory it was started in, command line.

Stored with every checkpoint (`run_context.json`) so a result can be traced to the code and hardware that
made it, minus anything private: no host names, and secrets scrubbed from the command line.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import delphi

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


def delphi_source() -> dict:
    """delphi's own version and, for a source install (a git checkout whose top is the folder holding
    the `delphi` package), its commit and dirty flag: which delphi made a run, wherever it was started."""
    root = Path(delphi.__file__).resolve().parent.parent
    state = None
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if top.returncode == 0 and Path(top.stdout.strip()).resolve() == root:
            state = _git_state(root)
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "version": delphi.__version__,
        "commit": state and state["commit"],
        "dirty": state and state["dirty"],
    }


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def run_context(*, world_size: int | None = None, cwd: str | os.PathLike | None = None) -> dict:
    """Versions (delphi's own with its source commit), device, world size, the git state of the
    directory the run was started in (`cwd`: where its recipes usually live; None outside a checkout) and
    the (scrubbed) command line of this run; no host names.

    Stored with every checkpoint (`run_context.json`) so a result can be traced to the code that made it.
    """
    import torch

    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "delphi": delphi_source(),
        "packages": {"delphi": delphi.__version__} | {name: _package_version(name) for name in _PACKAGES},
        "device": _device(),
        "world_size": world_size,
        "torch_num_threads": torch.get_num_threads(),
        "git": _git_state(Path.cwd() if cwd is None else cwd),
        "argv": scrub_argv(list(sys.argv)),
    }
