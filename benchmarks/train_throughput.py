"""DelphiTrainer against a minimal raw PyTorch loop: same model, data, batch and optimizer, side by side.

    python benchmarks/train_throughput.py                       # llama2-100k and mamba-100k, CPU
    python benchmarks/train_throughput.py --models llama2-10m --batch 64 --steps 20   # e.g. on a GPU
    python benchmarks/train_throughput.py --models recipes/demo/llama2-demo.yaml --batch 32 --seq-len 128 \
        --steps 48 --warmup 4 --repeats 7 [--fused-loss]     # the demo model; the training ledger's cost

On CUDA it runs bf16, eager and torch.compile. Prints tokens/s of each and the ratio trainer/raw;
the target is >= 0.95 on CPU and >= 0.9 on a GPU. Each is timed from the end of its --warmup-th step
to the end of its last step, so the Trainer's work between steps (logging, callbacks) counts.
Beside it, the same trainer with the training ledger on (`ledger: true`) and its cost in tokens/s
(target: at most 2%). With --repeats R the three runs alternate R times: each tokens/s is the median, the
ledger's cost the median of the R paired costs (ledger on against the trainer run beside it, the two in
alternating order), with their range. On a shared machine that range is wider than 2%; the line after
the table measures the ledger's own work precisely: one forward and backward of the same batch with the
ledger's loss recording on and off, interleaved (`ledger_loss_cost`).
`--clock cpu` times each run by this process's CPU time instead of the wall clock: on a machine other
jobs share, a run's wall time swings by 10-20% with their load, its CPU time (one torch thread) far less.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter  # set by --clock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from delphi.mamba import resolve_scan_path  # noqa: E402
from delphi.models import build_model, count_parameters  # noqa: E402
from delphi.recipe import load_recipe  # noqa: E402
from delphi.train.arguments import training_arguments  # noqa: E402
from delphi.train.fused_forward import use_fused_loss  # noqa: E402


def token_dataset(n: int, seq_len: int, vocab: int, seed: int = 0):
    import datasets

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, vocab, (n, seq_len), generator=g, dtype=torch.int32)
    return datasets.Dataset.from_dict({"tokens": tokens.tolist()})


def optimizer_and_schedule(model, recipe, total_steps: int):
    t = recipe.training
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t["learning_rate"],
        betas=(t["adam_beta1"], t["adam_beta2"]),
    )
    warmup = min(int(t.get("warmup_steps", 0)), total_steps)

    def lr_lambda(step):
        if step < warmup:
            return step / max(1, warmup)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


def raw_loop(recipe, data, *, batch: int, steps: int, device: str, bf16: bool, compile: bool) -> list[float]:
    """The shortest honest training loop: shuffled batches, forward, backward, clip, step. Step end times."""
    model = build_model(recipe.model, seed=recipe.seeds.init).to(device)
    model.train()
    fwd = torch.compile(model) if compile else model
    opt, sched = optimizer_and_schedule(model, recipe, steps)
    tokens = torch.tensor(data["tokens"], dtype=torch.long)
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))
    times = []
    for step in range(steps):
        ids = tokens[order[step * batch : (step + 1) * batch]].to(device, non_blocking=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.training["max_grad_norm"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # the Trainer logs the loss, which syncs too
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(clock())
    return times


def delphi_trainer(
    recipe,
    data,
    *,
    batch: int,
    steps: int,
    device: str,
    bf16: bool,
    compile: bool,
    ledger: bool = False,
    fused: bool = False,
) -> list[float]:
    from transformers import TrainerCallback

    from delphi.train.trainer import DelphiTrainer

    class StepTimer(TrainerCallback):
        """Step end times; the gaps between them include everything the Trainer does between steps."""

        def __init__(self):
            self.marks = []

        def on_step_end(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.marks.append(clock())

    timer = StepTimer()
    model = build_model(recipe.model, seed=recipe.seeds.init)
    use_fused_loss(model, fused)
    with tempfile.TemporaryDirectory() as out:
        extra = dict(
            max_steps=steps,
            save_strategy="no",
            eval_strategy="no",
            bf16=bf16,
            torch_compile=compile,
            use_cpu=device == "cpu",
            disable_tqdm=True,
            output_dir=out,
        )
        args = training_arguments(recipe, 1, **extra)
        trainer = DelphiTrainer(
            model=model,
            args=args,
            train_dataset=data,
            checkpoint_steps=[],
            seq_len=recipe.seq_len,
            callbacks=[timer],
            ledger=ledger,
        )
        trainer.train()
    return timer.marks


def ledger_loss_cost(recipe, *, batch: int, seq_len: int, device: str, fused: bool, pairs: int = 40) -> tuple:
    """(median seconds off, on, mean cost): a training forward + backward of one batch with the ledger's
    per-sequence loss recording (delphi.train.ledger_capture) off and on, interleaved, `clock` timed."""
    from delphi.train.ledger_capture import attach_recorder

    model = build_model(recipe.model, seed=recipe.seeds.init).to(device)
    use_fused_loss(model, fused)
    recorder = attach_recorder(model)
    model.train()
    ids = torch.randint(3, recipe.model.get("vocab_size", 4096), (batch, seq_len), device=device)
    items = torch.tensor(batch * (seq_len - 1), device=device)

    def one(on: bool) -> float:
        started = clock()
        with recorder.recording() if on else contextlib.nullcontext():
            loss = model(input_ids=ids, labels=ids, num_items_in_batch=items).loss
        recorder.take()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return clock() - started

    for _ in range(3):
        one(False), one(True)
    off, on = [], []
    for i in range(pairs):
        for flag in (False, True) if i % 2 else (True, False):
            (on if flag else off).append(one(flag))
    return median(off), median(on), sum(on) / sum(off) - 1


def recipe_path(name: str) -> Path:
    """A recipe file, or a name of recipes/stories/."""
    return Path(name) if name.endswith(".yaml") else REPO / "recipes" / "stories" / f"{name}.yaml"


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def span(step_ends: list[float], warmup: int) -> float:
    """Seconds from the end of the last warm-up step to the end of the last step."""
    return step_ends[-1] - step_ends[warmup - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["llama2-100k", "mamba-100k"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the runs R times; medians")
    parser.add_argument("--fused-loss", action="store_true", help="the trainer runs use the fused loss")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="time by wall clock or CPU time"
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")

    modes = [("fp32 eager", False, False)]
    if args.device == "cuda":
        modes = [("bf16 eager", True, False), ("bf16 compile", True, True)]
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else os.cpu_count()} "
          f"{'' if args.device == 'cuda' else 'cores'}), batch {args.batch}x{args.seq_len}, "
          f"{args.steps} steps, first {args.warmup} not timed, {args.repeats} repeat(s), "
          f"trainer loss {'fused' if args.fused_loss else 'plain'}, {args.clock} clock")  # fmt: skip
    header = (
        f"{'model':<24}{'mode':<14}{'params':>10}{'raw tok/s':>12}{'delphi tok/s':>14}{'ratio':>8}"
        f"{'+ledger tok/s':>15}{'ledger cost':>13}{'(range)':>18}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        recipe = load_recipe([recipe_path(name)], [f"seq_len={args.seq_len}"])
        data = token_dataset(args.batch * args.steps, args.seq_len, recipe.model.get("vocab_size", 4096))
        probe = build_model(recipe.model, device="meta")
        params = count_parameters(probe)[0]
        note = (
            f" [{resolve_scan_path('auto', args.device)}]" if "Mamba" in recipe.model["architecture"] else ""
        )
        recipe = load_recipe(
            [recipe_path(name)],
            [f"seq_len={args.seq_len}", f"batch_size={args.batch}", "micro_batch_size=null"],
        )
        for mode, bf16, compile in modes:
            kw = dict(batch=args.batch, steps=args.steps, device=args.device, bf16=bf16, compile=compile)
            tok = args.batch * args.seq_len * (args.steps - args.warmup)
            raw, ours, ledger = [], [], []
            for _ in range(args.repeats):  # alternating, so a slow patch of a shared machine hits all three
                raw.append(tok / span(raw_loop(recipe, data, **kw), args.warmup))
                for on in (False, True) if len(ours) % 2 else (True, False):  # alternating order
                    ends = delphi_trainer(recipe, data, fused=args.fused_loss, ledger=on, **kw)
                    (ledger if on else ours).append(tok / span(ends, args.warmup))
            raw_tps, our_tps, ledger_tps = median(raw), median(ours), median(ledger)
            costs = [1 - on / off for on, off in zip(ledger, ours, strict=True)]
            spread = f"{min(costs):.1%} .. {max(costs):.1%}"
            print(
                f"{Path(name).stem + note:<24}{mode:<14}{params:>10,}{raw_tps:>12,.0f}{our_tps:>14,.0f}"
                f"{our_tps / raw_tps:>8.3f}{ledger_tps:>15,.0f}{median(costs):>13.1%}{spread:>18}",
                flush=True,
            )
            if not compile:
                off, on, mean_cost = ledger_loss_cost(
                    recipe, batch=args.batch, seq_len=args.seq_len, device=args.device, fused=args.fused_loss
                )
                print(
                    f"{'':<24}ledger's own work in forward + backward ({mode}, 40 interleaved pairs): "
                    f"{off * 1e3:.1f} ms off, {on * 1e3:.1f} ms on (medians), cost {mean_cost:+.2%} (means)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
