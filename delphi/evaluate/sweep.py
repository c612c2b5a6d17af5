"""`delphi eval`: lm-evaluation-harness tasks on every chosen checkpoint of every run, resumable per cell.

A cell is one (run, checkpoint, task). Each finished cell is one small JSON file,
`OUT/cells/{run}/{branch}/{task}.json`, written atomically with everything that decides its numbers (task
lm_eval version, config hash, limit, few-shot, batch size, BOS setting, task metadata); a rerun computes only the cells that
are missing or whose recorded settings differ from this call's (those are recomputed and replaced, never
mixed). A checkpoint is loaded once for all its missing tasks; the harness' task objects are built once per
sweep. The tidy table (`results.parquet`, `results.csv`) and one plot per task are rebuilt from the cells.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from delphi import atomic
from delphi.errors import DelphiError
from delphi.evaluate.curves import Curve, curves_figure, expand_runs, run_details
from delphi.evaluate.harness import (
    check_task_names,
    evaluate,
    harness_model,
    load_tasks,
    require_lm_eval,
    task_manager,
)
from delphi.evaluate.sources import (
    checkpoint_fingerprint,
    checkpoint_meta,
    hub_map,
    list_branches,
    load_location,
    load_model,
    run_name,
)
from delphi.inputs import check_output_dir
from delphi.layout import EVAL_CELLS_DIR, EVAL_RESULTS, parse_step, step_name

log = logging.getLogger(__name__)

FINAL = "final"
COLUMNS = [
    "run", "recipe", "seed_init", "seed_data", "parameters", "architecture", "source", "step", "tokens_seen",
    "task", "metric", "value", "stderr", "samples", "num_fewshot", "limit", "lm_eval_version", "task_version",
    "config_hash", "batch_size", "dtype", "device",
]  # fmt: skip


@dataclass
class Options:
    """What `lm_eval` options mean to the harness; each one a cell records (see `Cell.settings`)."""

    tasks: list[str]
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: int = 1
    device: str | None = None
    include_path: list[str] = field(default_factory=list)
    metadata: dict | None = None
    add_bos_token: bool | None = None


@dataclass
class RunPlan:
    source: str
    name: str
    branches: list[str]  # the checkpoints to evaluate, oldest first
    metas: dict[str, dict]
    details: dict


def parse_steps(text: str | None) -> list[int | str] | None:
    """`1,64,final` -> [1, 64, "final"]; None -> every checkpoint."""
    if text is None:
        return None
    steps: list[int | str] = []
    for part in (p.strip() for p in text.split(",")):
        if part == FINAL:
            steps.append(FINAL)
        elif (step := parse_step(part) if part.startswith("step") else None) is not None:
            steps.append(step)
        elif part.isdigit():
            steps.append(int(part))
        else:
            raise DelphiError(f"--steps {text!r}: {part!r} is not a step number, step{{N}} or 'final'")
    if not steps:
        raise DelphiError(f"--steps {text!r} names no step; e.g. --steps 1,64,final")
    return list(dict.fromkeys(steps))


def _chosen(branches: list[str], steps: list | None, every: int | None) -> list[str]:
    numbers = [parse_step(b) for b in branches]
    if steps is not None:
        wanted = {s for s in steps if s != FINAL} | ({numbers[-1]} if FINAL in steps else set())
        return [b for b, n in zip(branches, numbers, strict=True) if n in wanted]
    if every is not None:
        return [b for b, n in zip(branches, numbers, strict=True) if n % every == 0 or b == branches[-1]]
    return list(branches)


def plan(inputs: list[str], steps: list | None = None, every: int | None = None) -> list[RunPlan]:
    """The runs behind `inputs` and the checkpoints of each to evaluate; a DelphiError (before any model is
    loaded) for an input that is not a run, a step no run has, or nothing to evaluate."""
    if every is not None and every < 1:
        raise DelphiError(f"--every must be a positive number of steps, got {every}")
    runs = expand_runs(inputs)
    plans = []
    for source in runs:
        branches = list_branches(source)
        if not branches:
            raise DelphiError(f"{source!r} has no step checkpoints (no complete step{{N}} folder or branch)")
        chosen = _chosen(branches, steps, every)
        metas = dict(zip(chosen, hub_map(lambda b, s=source: checkpoint_meta(s, b), chosen), strict=True))
        details = run_details(source, branches[-1]) if chosen else {}
        plans.append(RunPlan(source, run_name(source, branches), chosen, metas, details))
    if steps is not None:
        have = {parse_step(b) for p in plans for b in p.branches}
        missing = [s for s in steps if s != FINAL and s not in have]
        if missing:
            raise DelphiError(
                f"no run has checkpoint {', '.join(step_name(s) for s in missing)}; "
                f"{plans[0].source!r} has {', '.join(list_branches(plans[0].source)[:12])}"
            )
    if not any(p.branches for p in plans):
        raise DelphiError("no checkpoint to evaluate")
    return plans


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def run_folder(source: str) -> str:
    """A cell folder name per run: its name and a hash of where it is (two runs may share a name)."""
    key = str(Path(source).expanduser().resolve()) if Path(source).exists() else source
    return f"{_slug(Path(source.rstrip('/')).name)}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def cell_path(out: Path, source: str, branch: str, task: str) -> Path:
    return out / EVAL_CELLS_DIR / run_folder(source) / branch / f"{_slug(task)}.json"


def _settings(options: Options, config_hash: str, version: str, meta: dict) -> dict:
    """Everything that decides a cell's numbers, the checkpoint's `checkpoint.json` included: a cell
    computed with other settings, or on another checkpoint saved under the same name, is not this cell."""
    return {
        "checkpoint": checkpoint_fingerprint(meta),
        "lm_eval_version": version,
        "config_hash": config_hash,
        "limit": options.limit,
        "num_fewshot": options.num_fewshot,
        "batch_size": options.batch_size,
        "add_bos_token": options.add_bos_token,
        "metadata": options.metadata,
    }


def read_cell(path: Path, settings: dict) -> dict | None:
    """The finished cell at `path` if it was computed with `settings`, else None (missing, or stale)."""
    try:
        cell = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return cell if cell.get("settings") == settings else None


def check_options(options: Options) -> None:
    if options.limit is not None and options.limit <= 0:
        raise DelphiError(f"--limit must be a positive number of documents, got {options.limit}")
    if options.num_fewshot is not None and options.num_fewshot < 0:
        raise DelphiError(f"--num-fewshot must be 0 or more, got {options.num_fewshot}")
    if options.batch_size < 1:
        raise DelphiError(f"--batch-size must be at least 1, got {options.batch_size}")


def run_sweep(
    inputs: list[str],
    options: Options,
    out: str | os.PathLike,
    *,
    steps: list | None = None,
    every: int | None = None,
    progress=print,
) -> dict:
    """Evaluate every missing cell, then write the table and plots. Returns counts and the files written."""
    check_options(options)
    version = require_lm_eval()
    out = check_output_dir(out, what="--out")
    from delphi.devices import resolve_device

    device = resolve_device(options.device)  # default: the GPU when there is one; a device not here: refused
    plans = plan(inputs, steps, every)
    manager = task_manager(options.include_path, options.metadata, options.tasks)
    names = check_task_names(manager, options.tasks)
    tasks = load_tasks(manager, names, options.num_fewshot)
    computed = reused = 0
    for run in plans:
        for branch in run.branches:
            todo = [
                name
                for name in names
                if read_cell(
                    cell_path(out, run.source, branch, name),
                    _settings(options, tasks.hashes[name], version, run.metas[branch]),
                )
                is None
            ]
            reused += len(names) - len(todo)
            if not todo:
                continue
            model = load_model(run.source, branch, device=device)
            tokenizer = _tokenizer(run.source, branch)
            lm = harness_model(
                model, tokenizer, batch_size=options.batch_size, add_bos_token=options.add_bos_token
            )
            for name in todo:
                started = time.perf_counter()
                result = evaluate(lm, tasks, name, limit=options.limit, num_fewshot=options.num_fewshot)
                cell = {
                    "source": run.source,
                    "branch": branch,
                    "task": name,
                    "settings": _settings(options, tasks.hashes[name], version, run.metas[branch]),
                    "lm_eval_version": version,
                    "task_version": result["task_version"],
                    "dtype": str(model.dtype).removeprefix("torch."),
                    "device": device,
                    "seconds": time.perf_counter() - started,
                    "rows": result["rows"],
                }
                path = cell_path(out, run.source, branch, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_json(path, cell)
                computed += 1
                main = result["rows"][0] if result["rows"] else None
                shown = f"{main['metric']} {main['value']:.4f}" if main else "no metric"
                progress(f"{run.name} {branch} {name}: {shown} ({cell['seconds']:.1f} s)")
            del lm, model
    rows = table_rows(plans, options, tasks, out, version)
    files = write_table(rows, out)
    files += write_plots(rows, plans, names, out)
    return {
        "computed": computed,
        "reused": reused,
        "rows": len(rows),
        "files": files,
        "plans": plans,
        "table": rows,
    }


def _tokenizer(source: str, branch: str):
    from transformers import AutoTokenizer

    where, revision = load_location(source, branch)
    return AutoTokenizer.from_pretrained(where, revision=revision)


def table_rows(plans: list[RunPlan], options: Options, tasks, out: Path, version: str) -> list[dict]:
    """One row per (run, checkpoint, task, metric) of this sweep's cells."""
    rows = []
    for run in plans:
        seeds = run.details.get("seeds", (None, None))
        for branch in run.branches:
            meta = run.metas[branch]
            for name in tasks.names:
                cell = read_cell(
                    cell_path(out, run.source, branch, name),
                    _settings(options, tasks.hashes[name], version, run.metas[branch]),
                )
                if cell is None:
                    continue
                for row in cell["rows"]:
                    rows.append(
                        {
                            "run": run.name,
                            "recipe": re.sub(r"-seed\d+$", "", run.name),
                            "seed_init": seeds[0],
                            "seed_data": seeds[1],
                            "parameters": run.details.get("parameters"),
                            "architecture": run.details.get("architecture"),
                            "source": run.source,
                            "step": int(meta.get("step", parse_step(branch))),
                            "tokens_seen": int(meta.get("tokens_seen") or 0),
                            **{k: row[k] for k in ("task", "metric", "value", "stderr", "samples")},
                            "num_fewshot": tasks.fewshot[name],
                            "limit": options.limit,
                            "lm_eval_version": cell["lm_eval_version"],
                            "task_version": cell["task_version"],
                            "config_hash": cell["settings"]["config_hash"],
                            "batch_size": options.batch_size,
                            "dtype": cell["dtype"],
                            "device": cell["device"],
                            "_cell_task": name,
                        }
                    )
    return rows


def write_table(rows: list[dict], out: Path) -> list[Path]:
    import pyarrow as pa

    columns = {c: [r[c] for r in rows] for c in COLUMNS}
    types = {"value": pa.float64(), "stderr": pa.float64(), "parameters": pa.int64(), "samples": pa.int64(),
             "num_fewshot": pa.int64(), "limit": pa.int64(), "seed_init": pa.int64(), "seed_data": pa.int64(),
             "step": pa.int64(), "tokens_seen": pa.int64(), "batch_size": pa.int64()}  # fmt: skip
    table = pa.table({c: pa.array(v, type=types.get(c, pa.string())) for c, v in columns.items()})
    parquet = out / f"{EVAL_RESULTS}.parquet"
    atomic.write_parquet(parquet, [table], schema=table.schema)
    csv = out / f"{EVAL_RESULTS}.csv"
    atomic.write_csv(csv, COLUMNS, ([r[c] for c in COLUMNS] for r in rows))
    return [parquet, csv]


def task_curves(rows: list[dict], plans: list[RunPlan], name: str) -> tuple[str, list[Curve]]:
    """(metric, one Curve per run) of task `name`'s main metric: the first the harness reports for the task
    itself (its metric_list's first; for a group, the group's own)."""
    own = [r for r in rows if r["_cell_task"] == name]
    main = [r for r in own if r["task"] == name] or own
    if not main:
        return "", []
    task, metric = main[0]["task"], main[0]["metric"]
    curves = []
    for run in plans:
        points = sorted(
            (r["tokens_seen"], r["value"], r["step"])
            for r in own
            if r["source"] == run.source
            and r["task"] == task
            and r["metric"] == metric
            and r["tokens_seen"] > 0
        )
        if points:
            curves.append(Curve(name=run.name, source=run.source, points=points, **run.details))
    return metric, curves


def write_plots(rows: list[dict], plans: list[RunPlan], names: list[str], out: Path) -> list[Path]:
    """Per task, its main metric against tokens seen (log x): one line per recipe, seeds as their mean with a
    min-max band, colour by size, line style by architecture, as `delphi curves` draws loss."""
    files = []
    for name in names:
        metric, curves = task_curves(rows, plans, name)
        if not curves:
            continue
        figure = curves_figure(curves, title=f"{name}: {metric} over training", ylabel=f"{name} {metric}")
        path = out / f"{_slug(name)}.png"
        atomic.write_atomically(path, lambda temp, f=figure: f.savefig(temp, format="png"))
        files.append(path)
    return files
