"""Next-token log-probabilities of every token of a tokenized dataset, for every checkpoint of a run.

The output of one checkpoint is a dataset with one row per input sequence, in the input's order,
column `logprobs` (list of float32): position 0 is NaN (nothing predicts the first token), position
t is log p(token_t | tokens_<t). Locally: `{out_dir}/{branch}/{split}-00000.parquet`; on the hub: a
dataset repo with one branch per checkpoint holding `data/{split}-00000.parquet`. Either way
`datasets.load_dataset(out_dir/branch or repo, revision=branch, split=split)` reads it back.

A checkpoint is done once `delphi_logprobs.json` lists the split (written after the parquet file is
in place), so an interrupted run redoes only the unfinished checkpoint.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from delphi import atomic
from delphi.data.splits import load_split, split_name
from delphi.devices import resolve_device
from delphi.errors import DelphiError
from delphi.evaluate.sources import ALL, is_local, load_model, run_and_branches, select_branches
from delphi.hub.client import ensure_repo, hub_error
from delphi.inputs import check_output_dir

log = logging.getLogger(__name__)

MARKER = "delphi_logprobs.json"
COLUMN = "logprobs"


def token_logprobs(model, input_ids):
    """log p(input_ids[:, t] | input_ids[:, :t]) as float32 [batch, seq], NaN at t=0.

    Only this batch's `[batch, seq, vocab]` logits exist at once; cross_entropy is log_softmax + gather
    without a second vocab-sized tensor.
    """
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=input_ids, use_cache=False).logits
    vocab = logits.shape[-1]
    nll = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(), input_ids[:, 1:].reshape(-1), reduction="none"
    )
    out = torch.full(input_ids.shape, float("nan"), dtype=torch.float32, device=input_ids.device)
    out[:, 1:] = -nll.view(input_ids.shape[0], -1)
    return out


def token_column(ds, feature: str, source: str):
    """The `feature` column (a chunked, memory-mapped pyarrow list array), checked to hold integer
    sequences of at least 2 tokens."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if feature not in ds.column_names:
        raise DelphiError(
            f"feature {feature!r} not found in {source!r}; available columns: {ds.column_names}"
        )
    column = ds.data.column(feature)
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(
        kind.value_type
    ):
        raise DelphiError(f"feature {feature!r} in {source!r} has type {kind}, expected a list of token ids")
    if len(column) == 0:
        raise DelphiError(f"the split of {source!r} is empty: no sequences to score")
    if pc.min(pc.list_value_length(column)).as_py() < 2:
        raise DelphiError(f"feature {feature!r} in {source!r} has sequences shorter than 2 tokens")
    return column


def _max_token_id(column) -> int:
    import pyarrow.compute as pc

    return int(pc.max(pc.list_flatten(column)).as_py())


def _batches(column, batch_size: int):
    """Right-padded int64 arrays of `batch_size` sequences and their lengths (padding never feeds a
    real position: the models are causal). Only one batch is read into memory at a time."""
    import pyarrow.compute as pc

    for start in range(0, len(column), batch_size):
        rows = column.slice(start, batch_size).combine_chunks()
        lengths = pc.list_value_length(rows).to_numpy().astype(np.int64)
        values = rows.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        ids = np.zeros((len(rows), lengths.max()), dtype=np.int64)
        ids[np.arange(lengths.max()) < lengths[:, None]] = values
        yield ids, lengths


def _load_model(model: str, branch: str, device: str):
    return load_model(model, branch, device=device)


def _write_split(lm, column, batch_size: int, device: str, path: Path, desc: str) -> dict:
    """Score every sequence and stream the rows into `path` (parquet); returns counts and the mean."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from tqdm.auto import tqdm

    schema = pa.schema([(COLUMN, pa.list_(pa.float32()))])
    total, count = 0.0, 0
    with (
        pq.ParquetWriter(path, schema) as writer,
        tqdm(total=len(column), desc=desc, unit="seq", mininterval=1.0) as bar,
        torch.inference_mode(),
    ):
        for ids, lengths in _batches(column, batch_size):
            scores = token_logprobs(lm, torch.from_numpy(ids).to(device)).cpu().numpy()
            values = np.concatenate([scores[i, :n] for i, n in enumerate(lengths)])
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            rows = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()))
            writer.write_table(pa.Table.from_arrays([rows], schema=schema))
            predicted = values[~np.isnan(values)]
            total += float(predicted.astype(np.float64).sum())
            count += predicted.size
            bar.update(len(lengths))
    return {"sequences": len(column), "predicted_tokens": count, "mean_logprob": total / count}


def _read_marker(folder: Path) -> dict:
    path = folder / MARKER
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise DelphiError(f"cannot read {str(path)!r}: {e}; delete it to recompute that checkpoint") from e


def _write_marker(folder: Path, marker: dict) -> None:
    atomic.write_json(folder / MARKER, marker)


def _write_local(out_path: Path, branch: str, name: str, wanted: dict, write) -> tuple[Path, dict]:
    """Write split `name` of `branch` into `out_path/branch` (parquet, then the marker) so that an
    interruption leaves nothing half-done: a new branch folder is built under a hidden temp name and
    renamed into place once complete; into an existing one (another split), the parquet file is
    renamed into place before the marker names it."""
    file = f"{name}-00000.parquet"
    target = out_path / branch
    if target.is_dir():
        counts = atomic.write_atomically(target / file, lambda temp: write(path=temp))
        info = {**wanted, "branch": branch, "file": file, **counts}
        marker = _read_marker(target)
        marker.setdefault("splits", {})[name] = info
        _write_marker(target, marker)
        return target / file, info
    created = not out_path.exists()
    out_path.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{branch}.tmp-", dir=out_path))
    try:
        counts = write(path=building / file)
        info = {**wanted, "branch": branch, "file": file, **counts}
        _write_marker(building, {"splits": {name: info}})
        atomic.replace_dir(building, target)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
            if created and not any(out_path.iterdir()):
                out_path.rmdir()  # the --out-dir this call made holds nothing: it goes too
    return target / file, info


def _conflict(done: dict, wanted: dict) -> list[str]:
    """Differences that make an existing result a different computation (not a finished one)."""
    keys = ("model", "dataset", "split", "feature")
    return [f"{k}: {done.get(k)!r} (wanted {wanted[k]!r})" for k in keys if done.get(k) != wanted[k]]


def _is_done(marker: dict, name: str, wanted: dict, where: str) -> bool:
    done = marker.get("splits", {}).get(name)
    if done is None:
        return False
    differences = _conflict(done, wanted)
    if differences:
        raise DelphiError(
            f"{where} already holds logprobs of split {name!r} from another computation "
            f"({'; '.join(differences)}); choose another output location"
        )
    return True


def _local_done(out_dir: Path, branch: str, name: str, wanted: dict) -> bool:
    folder = out_dir / branch
    marker = _read_marker(folder)
    return _is_done(marker, name, wanted, str(folder)) and (folder / f"{name}-00000.parquet").is_file()


def _hub_marker(out_repo: str, branch: str) -> dict:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        path = hf_hub_download(out_repo, MARKER, repo_type="dataset", revision=branch)
    except (EntryNotFoundError, RevisionNotFoundError):
        return {}
    except Exception as e:
        raise hub_error(f"read {MARKER} (branch {branch}) of", out_repo, e) from e
    return json.loads(Path(path).read_text())


def _push(out_repo: str, branch: str, parquet: Path, name: str, info: dict) -> None:
    """Upload one split of one checkpoint to branch `branch` of dataset repo `out_repo`, in one commit."""
    from huggingface_hub import HfApi

    api = HfApi()
    marker = _hub_marker(out_repo, branch)
    marker.setdefault("splits", {})[name] = info
    try:
        api.create_branch(out_repo, branch=branch, repo_type="dataset", exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="delphi-logprobs-") as staging:
            (Path(staging) / "data").mkdir()
            atomic.link_or_copy(parquet, Path(staging) / "data" / f"{name}-00000.parquet")
            atomic.write_json(Path(staging) / MARKER, marker)
            api.upload_folder(
                folder_path=staging,
                repo_id=out_repo,
                repo_type="dataset",
                revision=branch,
                commit_message=f"Next-token logprobs of {info['model']} {branch} on {info['split']}",
            )
    except Exception as e:
        raise hub_error(f"push logprobs of {branch} to", out_repo, e) from e


def _model_id(model: str) -> str:
    return str(Path(model).resolve()) if is_local(model) else model


def _dataset_id(dataset: str) -> str:
    return str(Path(dataset).resolve()) if Path(dataset).exists() else dataset


def _public(wanted: dict) -> dict:
    """What a hub upload records of the inputs: local paths by their last part (no user's directories)."""
    return wanted | {k: Path(wanted[k]).name for k in ("model", "dataset") if os.path.isabs(wanted[k])}


def logprobs_for_checkpoints(
    model: str | os.PathLike,
    branches: str | list[str] = ALL,
    *,
    dataset: str | os.PathLike,
    split: str = "validation",
    feature: str = "tokens",
    out_dir: str | os.PathLike | None = None,
    out_repo: str | None = None,
    batch_size: int = 32,
    device: str | None = None,
) -> dict[str, dict]:
    """Score `dataset[split]` with every selected checkpoint of `model` (run dir, step folder or hub repo).

    Returns {branch: {"status": "computed" | "skipped", "location": ..., **counts}}. Checkpoints whose
    result already exists (locally and, with `out_repo`, on the hub) are skipped.
    """
    if out_dir is None and out_repo is None:
        raise DelphiError("nowhere to write: give --out-dir, --out-repo or both")
    if batch_size < 1:
        raise DelphiError(f"batch size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    out_path = None if out_dir is None else check_output_dir(out_dir)
    model, branches = run_and_branches(str(model), branches)
    dataset = str(dataset)
    selected = select_branches(model, branches)
    column = token_column(load_split(dataset, split), feature, dataset)
    max_id = _max_token_id(column)
    name = split_name(split)
    wanted = {"model": _model_id(model), "dataset": _dataset_id(dataset), "split": split, "feature": feature}
    local_done = {b: out_path is not None and _local_done(out_path, b, name, wanted) for b in selected}
    hub_done = {b: True for b in selected}
    if out_repo is not None:
        ensure_repo(out_repo, repo_type="dataset")
        public = _public(wanted)
        hub_done = {b: _is_done(_hub_marker(out_repo, b), name, public, f"{out_repo}@{b}") for b in selected}

    results: dict[str, dict] = {}
    for i, branch in enumerate(selected):
        where = []
        if out_path is not None:
            where.append(str(out_path / branch / f"{name}-00000.parquet"))
        if out_repo is not None:
            where.append(f"{out_repo}@{branch}")
        if (out_path is None or local_done[branch]) and hub_done[branch]:
            log.info("%s: already done (%s), skipping", branch, ", ".join(where))
            results[branch] = {"status": "skipped", "location": where}
            continue
        with tempfile.TemporaryDirectory(prefix="delphi-logprobs-") as work:
            if out_path is not None and local_done[branch]:
                parquet = out_path / branch / f"{name}-00000.parquet"
                info = _read_marker(out_path / branch)["splits"][name]
            else:
                lm = _load_model(model, branch, device)
                if max_id >= lm.config.vocab_size:
                    raise DelphiError(
                        f"{dataset!r} holds token id {max_id} but {branch} of {model!r} has vocab_size "
                        f"{lm.config.vocab_size}: the dataset was tokenized with another tokenizer"
                    )
                write = functools.partial(
                    _write_split, lm, column, batch_size, device, desc=f"{branch} ({i + 1}/{len(selected)})"
                )
                if out_path is None:
                    parquet = Path(work) / f"{name}-00000.parquet"
                    counts = write(path=parquet)
                    info = {**wanted, "branch": branch, "file": parquet.name, **counts}
                else:
                    parquet, info = _write_local(out_path, branch, name, wanted, write)
                del lm
            if out_repo is not None and not hub_done[branch]:
                _push(out_repo, branch, parquet, name, info | _public(wanted))
        log.info("%s: mean next-token logprob %.4f (%s)", branch, info["mean_logprob"], ", ".join(where))
        results[branch] = {"status": "computed", "location": where, **info}
    return results


def load_logprobs(location: str | os.PathLike, branch: str, split: str = "validation"):
    """The logprobs dataset of one checkpoint, from an `--out-dir` or a `--out-repo` (hub dataset)."""
    path = Path(location)
    if path.exists():
        return load_split(path / branch, split)
    return load_split(str(location), split, revision=branch)
