"""Every checkpoint of every run measured on one probe, into one tidy table (`DIR/dynamics.parquet` and
`.csv`): one row per (run, checkpoint, layer, component, quantity, metric).

Resumable per checkpoint, like `delphi logprobs`: each checkpoint's rows are one parquet file written
atomically (temp name, rename) under `DIR/.dynamics/{probe}/runs/{run}/{branch}-{fingerprint}.parquet`
(`RunInfo.file_name`: the fingerprint covers the checkpoints its numbers depend on); a file that
exists is a checkpoint done, so a killed run, rerun, measures only what is missing. `{probe}` is the
probe's fingerprint (a hash of its token ids): another probe measures into another folder, so results of
two probes are never mixed, and switching back finds the first one's results still there. The table is
rebuilt from the current probe's files at the end of every call.

What is held at once: one checkpoint being measured (model, gradients, its probe activations), the run's
final checkpoint's activations (the reference of `cka_final`), and copies of the weights of the run's
first checkpoint and of the previous one (for the relative distances). CKA across seeds is a second pass
per recipe: for each step, the seeds' checkpoints of that step are loaded in turn, a forward pass each,
and their block outputs kept until that step's CKAs are written (`{probe}/seeds/{recipe}/{branch}-{fingerprint}.parquet`):
seeds x layers x probe tokens x hidden floats (3 seeds of a 4-layer, 256-wide model on a 64 x 128 probe:
3 x 4 x 8192 x 256 x 4 bytes = 100 MB).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import yaml

from delphi import atomic
from delphi.devices import resolve_device
from delphi.dynamics.probe import Probe, load_probe
from delphi.errors import DelphiError
from delphi.evaluate.curves import Curve, distinct_seeds, expand_runs, run_details
from delphi.evaluate.sources import (
    ALL,
    checkpoint_fingerprint,
    checkpoint_meta,
    hub_map,
    is_local,
    list_branches,
    load_model,
    read_checkpoint_file,
    run_name,
    select_branches,
)
from delphi.inputs import check_output_dir
from delphi.layout import CONFIG_FILE, RECIPE_FILE, parse_step, step_name

log = logging.getLogger(__name__)

CACHE = ".dynamics"
COLUMNS = [
    "run", "recipe", "seed_init", "seed_data", "architecture", "parameters", "step", "tokens_seen",
    "layer", "component", "quantity", "metric", "value",
]  # fmt: skip


@dataclass(frozen=True)
class RunInfo:
    """One run as the table names it, and the checkpoints measured of it."""

    source: str
    name: str
    curve: Curve  # name, identity, seeds, parameters, architecture (no points): what `curves` knows of it
    recipe: dict
    branches: list[str]  # every checkpoint of the run, oldest first
    selected: list[str]
    metas: dict[str, dict]  # checkpoint.json of each selected branch

    @property
    def key(self) -> str:
        """The run's folder in the cache: its name and a hash of where it is (two runs may share a name)."""
        where = str(Path(self.source).expanduser().resolve()) if is_local(self.source) else self.source
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)[:60]
        return f"{safe}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"

    def file_name(self, branch: str) -> str:
        """A checkpoint's file in the cache, named by what its numbers depend on: the checkpoint itself, the
        run's first checkpoint and the one before it (relative distances) and its final one (`cka_final`),
        each by its checkpoint.json. A run that gained checkpoints since, or was retrained into the same
        out_dir, measures again instead of mixing its old numbers with new ones."""
        index = self.branches.index(branch)
        depends = [branch, self.branches[0], self.branches[index - 1] if index else None, self.branches[-1]]
        fingerprint = checkpoint_fingerprint(*(self.metas[b] if b else {} for b in depends))
        return f"{branch}-{fingerprint}.parquet"

    @property
    def seq_len(self) -> int | None:
        value = self.recipe.get("seq_len")
        return int(value) if isinstance(value, int) else None

    @property
    def vocab_size(self) -> int | None:
        value = (self.recipe.get("model") or {}).get("vocab_size")
        return int(value) if isinstance(value, int) else None


def parse_steps(steps: str | list | None) -> str | list[str]:
    """`ALL`, or `1,8,step16` (ints or branch names) as branch names."""
    if steps is None or steps == ALL or steps == [ALL]:
        return ALL
    items = steps.split(",") if isinstance(steps, str) else [str(s) for s in steps]
    names = []
    for item in (i.strip() for i in items if str(i).strip()):
        if item.isdigit():
            names.append(step_name(int(item)))
        elif re.fullmatch(r"step\d+", item):
            names.append(item)
        else:
            raise DelphiError(
                f"--steps {item!r} is not a step; expected ALL or steps like 1,8 or step1,step8"
            )
    if not names:
        raise DelphiError(f"--steps {steps!r} names no step; expected ALL or steps like 1,8")
    return names


def read_run(source: str, steps: str | list[str]) -> RunInfo:
    branches = list_branches(source)
    selected = select_branches(source, steps)
    try:
        recipe = yaml.safe_load(read_checkpoint_file(source, branches[-1], RECIPE_FILE)) if branches else None
    except (DelphiError, yaml.YAMLError):
        recipe = None
    recipe = recipe if isinstance(recipe, dict) else {}
    name = run_name(source, branches)
    details = run_details(source, branches[-1], recipe) if recipe else {}
    # the selected checkpoints', and those their numbers depend on (see RunInfo.file_name)
    needed = set(selected) | {branches[0], branches[-1]}
    needed |= {branches[branches.index(b) - 1] for b in selected if branches.index(b) > 0}
    needed = [b for b in branches if b in needed]
    metas = dict(zip(needed, hub_map(lambda b: checkpoint_meta(source, b), needed), strict=True))
    curve = Curve(name=name, source=source, points=[], **details)
    return RunInfo(source, name, curve, recipe, branches, selected, metas)


def default_probe(run: RunInfo) -> tuple[str, str]:
    """(dataset, feature) of the run's own recipe: `data.path` and `data.feature`."""
    data = run.recipe.get("data") or {}
    path = data.get("path")
    if not path or not Path(str(path)).expanduser().exists():
        raise DelphiError(
            f"no --probe given and the dataset of {run.name!r}'s recipe ({path!r}) is not here; "
            "pass --probe DATASET (a tokenized delphi dataset)"
        )
    return str(path), str(data.get("feature") or "tokens")


def _rows_table(rows: list[tuple]):
    import pyarrow as pa

    layer, component, quantity, metric, value = (
        (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 5
    )
    return pa.table(
        {
            "layer": pa.array(layer, pa.int64()),
            "component": pa.array(component, pa.string()),
            "quantity": pa.array(quantity, pa.string()),
            "metric": pa.array(metric, pa.string()),
            "value": pa.array(value, pa.float64()),
        }
    )


def _load_weights(source: str, branch: str, device: str):
    from delphi.dynamics.measure import weights_of

    return weights_of(load_model(source, branch, device=device))


def measure_run(run: RunInfo, probe: Probe, folder: Path, device: str) -> tuple[int, int]:
    """Measure every selected checkpoint of `run` not already in `folder`; (computed, skipped)."""
    import torch

    from delphi.dynamics.measure import measure, probe_pass, weights_of

    todo = [b for b in run.selected if not (folder / run.file_name(b)).is_file()]
    if not todo:
        return 0, len(run.selected)
    folder.mkdir(parents=True, exist_ok=True)
    ids = torch.from_numpy(probe.ids).to(device)
    final_branch = run.branches[-1]
    final = probe_pass(load_model(run.source, final_branch, device=device), ids)
    first = None
    held: tuple[str, dict] | None = None  # the last checkpoint measured and its weights
    for n, branch in enumerate(todo):
        index = run.branches.index(branch)
        model = load_model(run.source, branch, device=device)
        measured = final if branch == final_branch else probe_pass(model, ids)
        current = weights_of(model)
        if first is None:
            first = current if index == 0 else _load_weights(run.source, run.branches[0], device)
        previous = None
        if index > 0:
            before = run.branches[index - 1]
            previous = held[1] if held and held[0] == before else _load_weights(run.source, before, device)
        rows = measure(model, measured, first=first, previous=previous, final=final)
        atomic.write_parquet(folder / run.file_name(branch), [_rows_table(rows)])
        log.info("%s %s: measured (%d/%d)", run.name, branch, n + 1, len(todo))
        held = (branch, current)
        del model, measured
    return len(todo), len(run.selected) - len(todo)


def seed_groups(runs: list[RunInfo]) -> list[list[RunInfo]]:
    """Runs that are seeds of one recipe (the same name, seed suffix aside, and identity), copies of one
    run counted once; only groups of 2 or more seeds."""
    groups: dict[tuple, list[RunInfo]] = {}
    for run in runs:
        if run.curve.identity is None:
            continue
        groups.setdefault((run.curve.recipe_name, run.curve.identity), []).append(run)
    out = []
    for members in groups.values():
        kept = {id(c) for c in distinct_seeds([m.curve for m in members])}
        members = [m for m in members if id(m.curve) in kept]
        if len(members) > 1:
            out.append(members)
    return out


def _group_key(members: list[RunInfo]) -> str:
    return hashlib.sha256("|".join(sorted(m.key for m in members)).encode()).hexdigest()[:16]


def seeds_file_name(members: list[RunInfo], branch: str) -> str:
    """The cross-seed CKAs of one step, named by the seeds' checkpoints of that step (their checkpoint.json)."""
    return f"{branch}-{checkpoint_fingerprint(*(m.metas.get(branch, {}) for m in members))}.parquet"


def measure_seeds(members: list[RunInfo], probe: Probe, folder: Path, device: str) -> tuple[int, int]:
    """CKA of each block's output between the seeds of one recipe at each step they all have: per run,
    the mean over the other seeds (`cka_seeds`)."""
    import pyarrow as pa
    import torch

    from delphi.dynamics.measure import one_thread, probe_pass
    from delphi.dynamics.metrics import linear_cka

    shared = [b for b in members[0].selected if all(b in m.selected for m in members[1:])]
    todo = [b for b in shared if not (folder / seeds_file_name(members, b)).is_file()]
    if not todo:
        return 0, len(shared)
    folder.mkdir(parents=True, exist_ok=True)
    ids = torch.from_numpy(probe.ids).to(device)
    for branch in todo:
        outputs = []
        for m in members:
            model = load_model(m.source, branch, device=device)
            outputs.append(probe_pass(model, ids, gradients=False).activations)
            del model
        layers = len(outputs[0])
        cka = {}
        with one_thread():
            for a, b in combinations(range(len(members)), 2):
                for layer in range(layers):
                    cka[a, b, layer] = cka[b, a, layer] = linear_cka(outputs[a][layer], outputs[b][layer])
        keys, layer_col, values = [], [], []
        for a, m in enumerate(members):
            for layer in range(layers):
                others = [cka[a, b, layer] for b in range(len(members)) if b != a]
                keys.append(m.key)
                layer_col.append(layer)
                values.append(sum(others) / len(others))
        table = pa.table(
            {
                "run_key": pa.array(keys, pa.string()),
                "layer": pa.array(layer_col, pa.int64()),
                "value": pa.array(values, pa.float64()),
            }
        )
        atomic.write_parquet(folder / seeds_file_name(members, branch), [table])
        del outputs
    return len(todo), len(shared) - len(todo)


def _labels(runs: list[RunInfo]) -> list[str]:
    names = [r.name for r in runs]
    return [f"{r.name} ({r.source})" if names.count(r.name) > 1 else r.name for r in runs]


def gather(runs: list[RunInfo], cache: Path):
    """The tidy table (pyarrow) of every selected checkpoint of `runs` from the cache of one probe."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    seeds_by_run: dict[str, dict[str, Path]] = {}
    for members in seed_groups(runs):
        folder = cache / "seeds" / _group_key(members)
        for m in members:
            seeds_by_run[m.key] = {b: folder / seeds_file_name(members, b) for b in m.selected}
    parts = []
    for run, label in zip(runs, _labels(runs), strict=True):
        for branch in run.selected:
            table = pq.read_table(cache / "runs" / run.key / run.file_name(branch))
            seeds_file = seeds_by_run.get(run.key, {}).get(branch)
            if seeds_file is not None and seeds_file.is_file():
                cka = pq.read_table(seeds_file).to_pydict()
                layers = [
                    layer for k, layer in zip(cka["run_key"], cka["layer"], strict=True) if k == run.key
                ]
                values = [v for k, v in zip(cka["run_key"], cka["value"], strict=True) if k == run.key]
                n = len(layers)
                extra = pa.table(
                    {
                        "layer": pa.array(layers, pa.int64()),
                        "component": pa.array(["block"] * n, pa.string()),
                        "quantity": pa.array(["activation"] * n, pa.string()),
                        "metric": pa.array(["cka_seeds"] * n, pa.string()),
                        "value": pa.array(values, pa.float64()),
                    }
                )
                table = pa.concat_tables([table, extra])
            meta = run.metas[branch]
            n = table.num_rows
            constants = {
                "run": (label, pa.string()),
                "recipe": (run.curve.recipe_name, pa.string()),
                "seed_init": (run.curve.seeds[0], pa.int64()),
                "seed_data": (run.curve.seeds[1], pa.int64()),
                "architecture": (run.curve.architecture, pa.string()),
                "parameters": (run.curve.parameters, pa.int64()),
                "step": (int(meta["step"]), pa.int64()),
                "tokens_seen": (meta.get("tokens_seen"), pa.int64()),
            }
            columns = {k: pa.array([v] * n, t) for k, (v, t) in constants.items()}
            parts.append(pa.table({**columns, **{c: table.column(c) for c in table.column_names}}))
    return pa.concat_tables(parts).select(COLUMNS)


def write_table(table, out: Path) -> tuple[Path, Path]:
    """`out/dynamics.parquet` and `out/dynamics.csv` (values as Python writes floats: every digit kept)."""
    parquet, csv = out / "dynamics.parquet", out / "dynamics.csv"
    atomic.write_parquet(parquet, [table])
    columns = table.to_pydict()
    rows = zip(*(columns[c] for c in COLUMNS), strict=True)
    atomic.write_csv(csv, COLUMNS, ([("" if v is None else v) for v in row] for row in rows))
    return parquet, csv


@dataclass(frozen=True)
class DynamicsResult:
    table: Path
    csv: Path
    plots: list[Path]
    computed: int
    skipped: int
    probe: dict
    rows: int


def run_dynamics(
    runs: list[str | os.PathLike],
    *,
    steps: str | list | None = ALL,
    probe: str | os.PathLike | None = None,
    split: str = "validation",
    feature: str | None = None,
    sequences: int = 64,
    out_dir: str | os.PathLike = "dynamics",
    plots: list[str] | None = None,
    device: str | None = None,
) -> DynamicsResult:
    """Measure every selected checkpoint of `runs` (run directories, directories of runs, hub repos) on a
    probe and write the table and plots to `out_dir`. Every input is checked before any model is loaded."""
    from delphi.dynamics.plot import DEFAULT_PLOTS, check_plots, write_plots

    if not runs:
        raise DelphiError("give at least one run directory, directory of runs or hub repo")
    plots = check_plots(DEFAULT_PLOTS if plots is None else plots)
    device = resolve_device(device)
    out = check_output_dir(out_dir, what="--out")
    wanted = parse_steps(steps)
    for run in map(str, runs):
        path = Path(run).expanduser()
        if is_local(run) and (path / CONFIG_FILE).is_file() and parse_step(path.name) is not None:
            raise DelphiError(
                f"{run!r} is one checkpoint (a step folder); dynamics measures whole runs (each checkpoint "
                f"against the run's first, previous and final ones): pass {str(path.parent)!r} --steps "
                f"{parse_step(path.name)}"
            )
    infos = [read_run(source, wanted) for source in expand_runs(runs)]
    dataset, default_feature = (str(probe), "tokens") if probe is not None else default_probe(infos[0])
    lengths = [r.seq_len for r in infos if r.seq_len]
    the_probe = load_probe(
        dataset, split, feature or default_feature, sequences, min(lengths) if lengths else None
    )
    for run in infos:
        if run.vocab_size is not None and the_probe.max_token_id >= run.vocab_size:
            raise DelphiError(
                f"the probe ({dataset!r}, {split!r}) holds token id {the_probe.max_token_id} but {run.name!r} "
                f"has vocab_size {run.vocab_size}: the dataset was tokenized with another tokenizer"
            )
    cache = out / CACHE / the_probe.fingerprint[:16]
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "probe.json").is_file():
        atomic.write_json(cache / "probe.json", the_probe.describe())
    computed = skipped = 0
    for run in infos:
        done, kept = measure_run(run, the_probe, cache / "runs" / run.key, device)
        computed, skipped = computed + done, skipped + kept
    for members in seed_groups(infos):
        measure_seeds(members, the_probe, cache / "seeds" / _group_key(members), device)
    table = gather(infos, cache)
    parquet, csv = write_table(table, out)
    identities = dict(zip(_labels(infos), (r.curve.identity for r in infos), strict=True))
    pngs = write_plots(table, out, plots, identities)
    return DynamicsResult(parquet, csv, pngs, computed, skipped, the_probe.describe(), table.num_rows)
