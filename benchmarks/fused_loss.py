"""Peak memory and tokens/s of a training step with the plain loss and with delphi's fused loss, side by side.

    python benchmarks/fused_loss.py                                   # llama2-1m, 64 x 512, CPU, fp32
    python benchmarks/fused_loss.py --device cuda --dtype bfloat16 --model llama2-50m --batch 256
    python benchmarks/fused_loss.py --check                           # also: loss and gradients agree

A step is what the Trainer does: forward with labels, backward, gradient clipping, AdamW. Each variant
runs in a fresh subprocess (`--variant`), so that its peak memory is its own: on CPU the growth of the
peak resident set (ru_maxrss) from just before the first step, on CUDA `torch.cuda.max_memory_allocated`
over the timed steps minus what was allocated before them (weights, gradients, optimizer state).
Rounds alternate plain/fused; tokens/s is each variant's best round (the machine may be shared).
Targets (the fused loss's issue): memory <= 0.5x and tokens/s >= 0.95x the plain path's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIB = 2**20


def build(model_name: str, device: str, fused: bool, chunk_rows: int | None):
    from delphi.models import build_model
    from delphi.recipe import load_recipe
    from delphi.train.fused_forward import use_fused_loss

    path = (
        Path(model_name)
        if model_name.endswith(".yaml")
        else REPO / "recipes" / "stories" / f"{model_name}.yaml"
    )
    recipe = load_recipe([path])
    model = build_model(recipe.model, seed=recipe.seeds.init)
    what = use_fused_loss(model, fused, chunk_rows=chunk_rows)
    return recipe, model.to(device), what


def batch_of(n: int, seq_len: int, vocab: int, device: str, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n, seq_len), generator=g).to(device)


def run_variant(args) -> dict:
    """One variant in this process: warmup + timed steps; its peak memory and tokens/s."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    fused = args.variant == "fused"
    recipe, model, what = build(args.model, args.device, fused, args.chunk_rows)
    model.train()
    ids = batch_of(args.batch, recipe.seq_len, recipe.model["vocab_size"], args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bf16 = args.dtype == "bfloat16"
    cuda = args.device == "cuda"

    def step():
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        if cuda:
            torch.cuda.synchronize()
        return value

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        steady = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    losses, started = [], time.perf_counter()
    for _ in range(args.steps):
        losses.append(step())
    seconds = time.perf_counter() - started
    out = {
        "variant": args.variant,
        "loss_path": what,
        "tokens_per_second": args.steps * args.batch * recipe.seq_len / seconds,
        "seconds_per_step": seconds / args.steps,
        "losses": losses,
        "threads": torch.get_num_threads(),
        "seq_len": recipe.seq_len,
    }
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        out.update(peak_bytes=peak, step_peak_bytes=peak - steady, steady_bytes=steady)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out.update(peak_bytes=peak, step_peak_bytes=peak - rss_before, steady_bytes=rss_before)
    return out


def check(args) -> None:
    """Loss and every gradient of one step, plain vs fused, on the same weights and batch."""
    import torch

    results = []
    for fused in (False, True):
        recipe, model, what = build(args.model, args.device, fused, args.chunk_rows)
        model.train()
        ids = batch_of(min(args.batch, 8), recipe.seq_len, recipe.model["vocab_size"], args.device)
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((what, loss.item(), {n: p.grad.double() for n, p in model.named_parameters()}))
        del model
    (_, plain_loss, plain), (what, fused_loss, fused) = results
    worst = max(plain, key=lambda n: (fused[n] - plain[n]).norm() / plain[n].norm())
    rel = ((fused[worst] - plain[worst]).norm() / plain[worst].norm()).item()
    print(
        f"check ({args.device}, {args.dtype}, fused path: {what}): loss plain {plain_loss:.8f} fused "
        f"{fused_loss:.8f} (rel {abs(fused_loss - plain_loss) / abs(plain_loss):.1e}); largest gradient "
        f"difference {rel:.1e} of its norm ({worst})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default="llama2-1m",
        help="a recipe in recipes/stories/ (default llama2-1m) or a recipe file",
    )
    p.add_argument("--batch", type=int, default=64, help="sequences per step (default 64)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="bfloat16 = autocast")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="alternating plain/fused rounds")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--chunk-rows", type=int, default=None, help="fused chunk size (default: chosen per batch)"
    )
    p.add_argument("--check", action="store_true", help="first compare loss and gradients of one step")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--variant", choices=["plain", "fused"], help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    if args.check:
        check(args)
    forwarded = [a for a in sys.argv[1:] if a not in ("--check",)]
    if "--json" in forwarded:
        i = forwarded.index("--json")
        del forwarded[i : i + 2]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs: dict[str, list[dict]] = {"plain": [], "fused": []}
    for _ in range(args.rounds):
        for variant in ("plain", "fused"):
            proc = subprocess.run(
                [sys.executable, __file__, *forwarded, "--variant", variant],
                capture_output=True, text=True, env=env,
            )  # fmt: skip
            if proc.returncode != 0:
                sys.exit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[variant].append(result)
            print(
                f"  {variant:5s}: {result['tokens_per_second']:9.0f} tokens/s, step peak "
                f"{result['step_peak_bytes'] / MIB:8.1f} MiB (total {result['peak_bytes'] / MIB:.0f} MiB), "
                f"loss {result['losses'][-1]:.4f}",
                flush=True,
            )
    best = {v: max(r, key=lambda x: x["tokens_per_second"]) for v, r in runs.items()}
    memory = {v: min(x["step_peak_bytes"] for x in r) for v, r in runs.items()}
    mem_ratio = memory["fused"] / memory["plain"]
    speed_ratio = best["fused"]["tokens_per_second"] / best["plain"]["tokens_per_second"]
    where = f"{args.device}, {args.dtype}, {best['plain']['threads']} torch threads, {os.cpu_count()} cpus"
    print(
        f"{args.model}, {args.batch} x {best['plain']['seq_len']} tokens per step ({where}); fused path: {best['fused']['loss_path']}"
    )
    print(
        f"  step peak memory: plain {memory['plain'] / MIB:.1f} MiB, fused {memory['fused'] / MIB:.1f} MiB "
        f"-> {mem_ratio:.3f}x (target <= 0.5)"
    )
    print(
        f"  tokens/s (best of {args.rounds}): plain {best['plain']['tokens_per_second']:.0f}, fused "
        f"{best['fused']['tokens_per_second']:.0f} -> {speed_ratio:.3f}x (target >= 0.95)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"runs": runs, "memory_ratio": mem_ratio, "speed_ratio": speed_ratio}, indent=2)
        )


if __name__ == "__main__":
    main()
