"""Install torch so that a CPU-only machine gets a CPU build and a GPU machine a CUDA build.

PyPI's Linux x86_64 torch wheels are CUDA builds (several GB). On a machine without an NVIDIA
GPU we take the CPU build from PyTorch's CPU index when it can be reached; otherwise (offline
mirrors, local wheel caches, macOS, aarch64) plain `pip install torch==VERSION` is used.
Usage: python scripts/install_torch.py  [env: TORCH_VERSION, TORCH_INDEX_URL to force an index]
"""

import os
import platform
import shutil
import subprocess
import sys
import urllib.request

VERSION = os.environ.get("TORCH_VERSION", "2.13.0")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def installed_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return None


def reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
        return True
    except Exception:
        return False


def main() -> None:
    have = installed_version()
    if have and have.split("+")[0] == VERSION:
        print(f"torch {have} already installed")
        return
    cmd = [sys.executable, "-m", "pip", "install", f"torch=={VERSION}"]
    index = os.environ.get("TORCH_INDEX_URL")
    has_gpu = shutil.which("nvidia-smi") is not None
    linux_x86 = platform.system() == "Linux" and platform.machine() == "x86_64"
    if index is None and not has_gpu and linux_x86 and reachable(f"{CPU_INDEX}/torch/"):
        index = CPU_INDEX
    if index:
        cmd += ["--index-url", index]
    print("installing:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
