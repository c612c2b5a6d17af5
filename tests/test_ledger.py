"""The training ledger (recipe `ledger: true`): each trained sequence's loss at each step, from the step's
own forward; exact against a recomputation with that step's weights, the same weights as without it, one
row per (step, sequence) whatever the loss path, micro-batching or accumulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from numerics import check
from safetensors.torch import load_file
from tiny import MAMBA_MODEL, MODEL, write_recipe

from delphi.layout import list_checkpoints, read_checkpoint_meta
from delphi.train import ledger
from delphi.train.order import step_indices


def train_tiny(stories_data, root: Path, name: str, **overrides) -> Path:
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    settings = {
        "ledger": True,
        "training.max_steps": 4,
        "training.warmup_steps": 1,
        "checkpoints.every": 1,
        "checkpoints.steps": [],
        "checkpoints.keep_optimizer": "none",
    } | overrides
    train(load_recipe([write_recipe(root / f"{name}.yaml", stories_data, root / name, **settings)]))
    return root / name


def ledger_rows(run: Path) -> dict[tuple[int, int], tuple[int, float]]:
    """{(step, index): (epoch, loss)} of a run's held ledger (each key must occur once)."""
    table = ledger.read(run).to_pydict()
    keys = list(zip(table["step"], table["index"], strict=True))
    assert len(keys) == len(set(keys)), "a (step, sequence) occurs twice"
    return {k: (e, loss) for k, e, loss in zip(keys, table["epoch"], table["loss"], strict=True)}


# Same weights, same tokens, two reduction orders (the step's micro-batch of 4 through the fused or plain
# training loss vs. the step's 8 sequences through a plain eval forward): the mean token loss (~6 = ln 384 at
# init, ulp 4.8e-7) differs by a few ulps of its dot products and logsumexp, far under 1e-5 of itself (the
# issue's bound, ~20 ulps). The loss one step later (another step's weights, lr 5e-3) differs by > 1e-3.
RECOMPUTE_RTOL = 1e-5


@pytest.mark.numerics
@pytest.mark.parametrize(
    "fused,model", [(True, MODEL), (False, MODEL), (True, MAMBA_MODEL)], ids=["fused", "plain", "mamba"]
)
def test_each_rows_loss_is_a_recomputation_with_that_steps_weights(stories_data, tmp_path, fused, model):
    """Rows of a run checkpointed at every step, with 2 accumulated micro-batches a step, against each
    sequence's loss recomputed alone from the weights before the step (step{s-1}; the seed's init for step 1)."""
    from delphi.models import build_model
    from delphi.recipe import load_recipe
    from delphi.train.data import load_token_split

    run = train_tiny(stories_data, tmp_path, "run", micro_batch_size=4, fused_loss=fused, model=model)
    recipe = load_recipe([tmp_path / "run.yaml"])
    train = load_token_split(recipe.data.path, "train")
    rows = ledger_rows(run)
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps == [1, 2, 3, 4]
    # every step once, exactly the sequences the data order gives it
    want = step_indices(len(train), recipe.seeds.data, recipe.batch_size, steps=steps)
    for step, indices in zip(steps, want, strict=True):
        assert sorted(i for s, i in rows if s == step) == sorted(indices.tolist())
    assert len(rows) == len(steps) * recipe.batch_size
    assert {e for e, _ in rows.values()} == {0}

    model = build_model(recipe.model, seed=recipe.seeds.init, mamba_scan=recipe.mamba_scan)  # before step 1
    worst, separation = 0.0, float("inf")
    for step in steps:
        if step > 1:
            model.load_state_dict(load_file(run / f"step{step - 1}" / "model.safetensors"), strict=False)
        model.eval()
        indices = sorted(i for s, i in rows if s == step)
        tokens = np.stack([np.asarray(train[int(i)]["tokens"]) for i in indices])
        recomputed = _recompute(model, tokens)
        logged = np.array([rows[(step, i)][1] for i in indices])
        worst = max(worst, float(np.max(np.abs(logged - recomputed) / np.abs(recomputed))))
        if 1 < step < steps[-1]:  # the weights after the step (step 1 has lr 0): a row from them is far off
            after = build_model(recipe.model, seed=recipe.seeds.init, mamba_scan=recipe.mamba_scan)
            after.load_state_dict(load_file(run / f"step{step}" / "model.safetensors"), strict=False)
            after.eval()
            separation = min(separation, float(np.max(np.abs(_recompute(after, tokens) - logged) / logged)))
    what = f"{recipe.model['architecture']}, {'fused' if fused else 'plain'}"
    check(f"ledger loss vs recomputation ({what})", worst, RECOMPUTE_RTOL)
    assert separation > 100 * RECOMPUTE_RTOL, separation
    meta = read_checkpoint_meta(run / "step4")["ledger"]
    assert meta["rows"] == 4 * recipe.batch_size and (meta["first_step"], meta["last_step"]) == (1, 4)


def test_weights_are_the_same_with_the_ledger_on_or_off(stories_data, tmp_path):
    """`ledger` is not part of a run's identity: it records the loss, it never changes a weight (bitwise,
    plain and fused loss, with accumulation)."""
    for fused in (False, True):
        on = train_tiny(stories_data, tmp_path, f"on{fused}", fused_loss=fused, micro_batch_size=4)
        off = train_tiny(
            stories_data, tmp_path, f"off{fused}", fused_loss=fused, micro_batch_size=4, ledger=False
        )
        a, b = (load_file(r / "step4" / "model.safetensors") for r in (on, off))
        assert all(torch.equal(a[k], b[k]) for k in b), f"fused={fused}"
        assert not (off / "ledger").exists() and len(ledger.parts(on)) == 4


def test_parts_are_compact_sorted_and_one_per_interval(stories_data, tmp_path):
    run = train_tiny(stories_data, tmp_path, "run", **{"checkpoints.every": 2, "training.max_steps": 5})
    names = [p.name for _, _, p in ledger.parts(run)]
    assert names == [ledger.part_name(1, 2), ledger.part_name(3, 4), ledger.part_name(5, 5)]
    table = pq.read_table(run / "ledger" / names[0])
    assert [str(t) for t in table.schema.types] == ["int32", "int16", "int32", "float"]
    assert pq.ParquetFile(run / "ledger" / names[0]).metadata.row_group(0).column(3).compression == "ZSTD"
    keys = list(zip(table["step"].to_pylist(), table["index"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    assert np.isfinite(table["loss"].to_numpy()).all() and (table["loss"].to_numpy() > 0).all()


def test_ten_epochs_over_a_million_sequences_stay_under_100_mb():
    size = ledger.estimate_size(1_000_000, 10, batch=256, sample_steps=200)
    assert size < 100e6, size


def _recompute(model, tokens: np.ndarray) -> np.ndarray:
    from delphi.train.trainer import sequence_losses

    ids = torch.from_numpy(tokens.astype(np.int64))
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    return sequence_losses(logits, ids).double().numpy()


def test_rows_kept_between_checkpoints_survive_their_buffers_growing():
    """An interval longer than the first buffer (1024 rows): every row comes back, in order, exactly."""
    from accelerate import Accelerator

    from delphi.train.ledger_capture import LedgerRows, SequenceLossRecorder

    rows = LedgerRows(SequenceLossRecorder())
    generator = torch.Generator().manual_seed(0)
    steps, batches = range(1, 8), []
    for step in steps:
        indices = torch.randperm(10_000, generator=generator)[:300]
        losses = torch.rand(300, generator=generator) * 5
        rows.add(step, indices, losses)
        batches.append((indices, losses))
    step, index, loss = rows.gather(Accelerator(cpu=True))
    assert step.tolist() == [s for s in steps for _ in range(300)]
    assert index.tolist() == torch.cat([i for i, _ in batches]).tolist()
    assert np.array_equal(loss, torch.cat([v for _, v in batches]).numpy())
    assert rows.gather(Accelerator(cpu=True)) is None  # emptied; the next interval starts from nothing
    rows.add(8, torch.tensor([3, 1]), torch.tensor([0.5, 0.25]))
    assert [a.tolist() for a in rows.gather(Accelerator(cpu=True))] == [[8, 8], [3, 1], [0.5, 0.25]]
