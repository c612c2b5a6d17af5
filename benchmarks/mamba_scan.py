"""Mamba's selective-scan paths side by side: the scan alone and a full training step, against Llama.

For each path available on the device (see `delphi.mamba`): forward+backward time of one layer's scan
on that model's real shapes, a full training step (forward, backward, AdamW) of the whole model,
tokens/s and peak memory; then the ratios to Llama of the same size and to the fallback paths.

    python benchmarks/mamba_scan.py                       # CPU: mamba-100k vs llama2-100k, batch 64x512
    python benchmarks/mamba_scan.py --device cuda         # GPU: mamba-10m vs llama2-10m, bf16 autocast
    python benchmarks/mamba_scan.py --device cuda --check # GPU: Triton kernels vs reference numerics only
    python benchmarks/mamba_scan.py --batch 8 --paths chunked mambapy reference   # smaller / chosen paths

Peak memory is torch's allocator peak on CUDA, and the sampled rise in resident memory on the CPU.
The slow paths (mambapy, reference) run one step without warmup, since one step takes seconds.
On the CPU the default paths are chunked and mambapy (reference takes ~90 s a step; ask with --paths).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from delphi.mamba import missing_requirement, resolve_scan_path, scan_function  # noqa: E402
from delphi.mamba.mixer import forward_with_scan  # noqa: E402
from delphi.models import build_model  # noqa: E402
from delphi.recipe import load_recipe  # noqa: E402

SLOW_PATHS = ("mambapy", "reference")


class PeakMemory:
    """Peak bytes in use above the starting point while the block runs."""

    def __init__(self, device: str):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:  # sample the resident set: big tensors are mmap'd, so it follows what is alive
            self.start = self.peak_rss = _rss()
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak_rss = max(self.peak_rss, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.running = False
            self.thread.join()
            self.peak = self.peak_rss - self.start


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, *, warmup: int, reps: int) -> tuple[float, int]:
    """(best seconds per call, peak bytes) of `fn` over `reps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    with PeakMemory(device) as memory:
        for _ in range(reps):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best = min(best, time.perf_counter() - start)
    return best, memory.peak


def scan_inputs(model, batch: int, seq_len: int, device: str, dtype: torch.dtype):
    """The arguments the first mixer passes to its scan, for random tokens (leaves that need grad)."""
    mixer = model.backbone.layers[0].mixer
    captured = {}

    def capture(*args, use_mambapy=None, use_associative_scan=None, **kwargs):  # transformers-only options
        captured.update(args=args, kwargs=kwargs)
        return args[0]

    hidden = torch.randn(batch, seq_len, model.config.hidden_size, device=device)
    with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        forward_with_scan(capture)(mixer, hidden)
    args = [a.detach().clone().requires_grad_() for a in captured["args"]]
    kwargs = {
        k: v.detach().clone().requires_grad_() if isinstance(v, torch.Tensor) else v
        for k, v in captured["kwargs"].items()
    }
    return args, kwargs


def scan_step(path: str, args, kwargs):
    if path == "cuda-kernels":  # transformers' scan, which is mamba-ssm's selective_scan_fn when installed
        from transformers.models.mamba.modeling_mamba import mamba_selective_scan as scan
    else:
        scan = scan_function(path)

    def run():
        y = scan(*args, **kwargs)
        y.backward(torch.ones_like(y))

    return run


def train_step(model, batch: int, seq_len: int, device: str, dtype: torch.dtype):
    vocab = model.config.vocab_size
    tokens = torch.randint(3, vocab, (batch, seq_len), device=device, generator=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run():
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def default_paths(device: str) -> list[str]:
    """Every path that runs here; on the CPU not triton (interpreted: a correctness check, not a speed)
    nor reference (about 90 s a step at 64x512), which --paths can still ask for."""
    paths = ["cuda-kernels", "triton", "chunked", "mambapy", "reference"]
    if device != "cuda":
        paths = ["chunked", "mambapy"]
    return [p for p in paths if missing_requirement(p) is None]


def measure(name: str, path: str | None, a) -> dict:
    """One model (and one scan path for Mamba): scan-alone and full-step times, tokens/s, peak memory."""
    recipe = load_recipe([REPO / "recipes" / "stories" / f"{name}.yaml"], [f"seq_len={a.seq_len}"])
    torch.manual_seed(0)
    model = build_model(recipe.model, seed=0, mamba_scan=path or "auto").to(a.device).train()
    slow = path in SLOW_PATHS
    warmup, reps = (0, 1) if slow else (a.warmup, a.steps)
    row = {"model": name, "path": path or "-", "scan_s": None, "scan_mem": None}
    try:
        if path is not None:
            args, kwargs = scan_inputs(model, a.batch, a.seq_len, a.device, a.dtype)
            scan = scan_step(path, args, kwargs)
            row["scan_s"], row["scan_mem"] = timed(scan, a.device, warmup=warmup, reps=reps)
            del args, kwargs
        row["step_s"], row["step_mem"] = timed(
            train_step(model, a.batch, a.seq_len, a.device, a.dtype), a.device, warmup=warmup, reps=reps
        )
    except torch.OutOfMemoryError:
        row["step_s"] = row["step_mem"] = None
        row["note"] = "out of memory"
    row["tok_s"] = a.batch * a.seq_len / row["step_s"] if row.get("step_s") else None
    del model
    gc.collect()
    if a.device == "cuda":
        torch.cuda.empty_cache()
    return row


def check_numerics(device: str) -> bool:
    """Triton and chunked scans vs transformers' reference, output and every gradient, fp32 and bf16.

    bf16 runs get bf16-rounded inputs and are compared with the fp32 reference on the same values.
    """
    shapes = [(2, 64, 512, 16), (1, 48, 37, 16), (3, 100, 129, 16), (2, 800, 64, 16)]
    names = ("y", "du", "ddt", "dA", "dB", "dC", "dD", "dz", "dbias")
    ok = True
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        for shape in shapes:
            batch, d_inner, seq_len, n = shape
            g = torch.Generator().manual_seed(0)

            def make(*size, g=g):
                return torch.randn(*size, generator=g).to(device)

            per_step = [make(batch, d_inner, seq_len), make(batch, d_inner, seq_len) - 2, make(batch, n, seq_len),
                        make(batch, n, seq_len), make(batch, d_inner, seq_len)]  # fmt: skip
            u, dt, B, C, z = (t.to(dtype).float() for t in per_step)
            A, D, bias = -torch.exp(make(d_inner, n)), make(d_inner), make(d_inner) * 0.5
            grad_out = make(batch, d_inner, seq_len)
            results = {}
            for path in ("reference", "triton", "chunked"):
                cast = torch.float32 if path == "reference" else dtype
                leaves = [t.to(cast).requires_grad_() for t in (u, dt, A, B, C)]
                leaves += [t.clone().requires_grad_() for t in (D, z.to(cast), bias)]
                y = scan_function(path)(
                    *leaves[:5], D=leaves[5], z=leaves[6], delta_bias=leaves[7], delta_softplus=True
                )
                results[path] = [y, *torch.autograd.grad((y.float() * grad_out).sum(), leaves)]
            for path in ("triton", "chunked"):
                errors = [
                    float(
                        (x.detach().double() - r.detach().double()).norm()
                        / r.detach().double().norm().clamp_min(1e-30)
                    )
                    for r, x in zip(results["reference"], results[path], strict=True)
                ]
                worst = max(errors)
                ok &= worst < tolerance
                print(
                    f"{path:<9}{str(dtype).removeprefix('torch.'):<10}{str(shape):<20}max rel err {worst:.1e} "
                    f"({names[errors.index(worst)]}) {'ok' if worst < tolerance else f'> {tolerance:g} FAIL'}",
                    flush=True,
                )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--models", nargs=2, metavar=("MAMBA", "LLAMA"), help="default: the 100k pair on CPU, 10m on CUDA"
    )
    parser.add_argument("--paths", nargs="+", help="scan paths to run (default: every one available)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, help="timed steps of the fast paths (default: 2 CPU, 5 CUDA)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--fp32", action="store_true", help="on CUDA: fp32 instead of bf16 autocast")
    parser.add_argument("--check", action="store_true", help="only check the Triton and chunked numerics")
    a = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if a.check:
        if missing_requirement("triton"):
            sys.exit(f"cannot check the Triton kernels: {missing_requirement('triton')}")
        sys.exit(0 if check_numerics("cuda" if torch.cuda.is_available() else "cpu") else 1)

    a.dtype = torch.bfloat16 if a.device == "cuda" and not a.fp32 else torch.float32
    a.steps = a.steps or (5 if a.device == "cuda" else 2)
    mamba, llama = a.models or (
        ("mamba-10m", "llama2-10m") if a.device == "cuda" else ("mamba-100k", "llama2-100k")
    )
    paths = a.paths or default_paths(a.device)
    for path in paths:
        if missing_requirement(path):
            sys.exit(f"path {path!r} is not available here: {missing_requirement(path)}")
    where = torch.cuda.get_device_name() if a.device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"{where}; batch {a.batch}x{a.seq_len}; {str(a.dtype).removeprefix('torch.')}; "
          f"auto = {resolve_scan_path('auto', a.device)}", flush=True)  # fmt: skip

    rows = [measure(llama, None, a)]
    _print_row(rows[0], header=True)
    for path in paths:
        rows.append(measure(mamba, path, a))
        _print_row(rows[-1])
    _print_ratios(rows)


def _fmt(value, scale: float = 1.0, unit: str = "") -> str:
    return "-" if value is None else f"{value * scale:,.0f}{unit}"


def _print_row(row: dict, header: bool = False) -> None:
    if header:
        print(
            f"{'model':<12}{'path':<14}{'scan f+b':>11}{'scan mem':>11}{'step':>10}{'tok/s':>10}{'step mem':>11}"
        )
    print(
        f"{row['model']:<12}{row['path']:<14}{_fmt(row['scan_s'], 1e3, ' ms'):>11}"
        f"{_fmt(row['scan_mem'], 2**-20, ' MiB'):>11}{_fmt(row.get('step_s'), 1e3, ' ms'):>10}"
        f"{_fmt(row['tok_s']):>10}{_fmt(row.get('step_mem'), 2**-20, ' MiB'):>11}  {row.get('note', '')}",
        flush=True,
    )


def _print_ratios(rows: list[dict]) -> None:
    llama, mambas = rows[0], {r["path"]: r for r in rows[1:]}
    print("\nratios (tokens/s, or scan speed for 'scan x'):")
    for path, row in mambas.items():
        parts = []
        if row["tok_s"] and llama["tok_s"]:
            parts.append(f"{row['tok_s'] / llama['tok_s']:.3f}x {llama['model']}")
        for slow in SLOW_PATHS:
            other = mambas.get(slow)
            if other and other is not row and other["tok_s"] and row["tok_s"]:
                parts.append(f"{row['tok_s'] / other['tok_s']:.1f}x {slow}")
            if other and other is not row and other["scan_s"] and row["scan_s"]:
                parts.append(f"scan {other['scan_s'] / row['scan_s']:.1f}x {slow}")
        print(f"  {path:<14}" + ", ".join(parts))


if __name__ == "__main__":
    main()
