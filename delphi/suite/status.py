"""`delphi suite --status`: one row per run, from its files alone (works while the suite runs)."""

from __future__ import annotations

from typing import Any

from delphi.layout import parse_step
from delphi.models import build_model, count_parameters
from delphi.recipe import load_recipe
from delphi.run_status import run_status
from delphi.suite.plan import SuiteRun

COLUMNS = ("run", "architecture", "parameters", "step", "val_loss", "tokens/s", "mfu", "state")


def _parameters(run: SuiteRun, context: dict | None, cache: dict) -> int | None:
    """From the newest checkpoint's run_context.json; before the first one, the model built on meta."""
    if context and isinstance(context.get("parameters"), int):
        return context["parameters"]
    key = (run.recipe_file, run.overrides)
    if key not in cache:
        try:
            model = build_model(load_recipe([run.recipe_file], list(run.overrides)).model, device="meta")
            cache[key] = count_parameters(model)[0]
        except Exception:  # a row must never hide the others
            cache[key] = None
    return cache[key]


def hub_branches(repo: str) -> int | None:
    """How many `step{N}` branches `repo` has on the hub; None when it cannot be asked."""
    from huggingface_hub import HfApi

    try:
        refs = HfApi().list_repo_refs(repo)
    except Exception:  # offline, no such repo, no access: the table still prints
        return None
    return sum(1 for b in refs.branches if parse_step(b.name) is not None)


def status_rows(runs: list[SuiteRun]) -> list[dict[str, Any]]:
    """One dict per run: name, architecture, parameters, step, max_steps, eval_loss, tokens/s, mfu, state, hub."""
    rows, cache = [], {}
    for run in runs:
        status = run_status(run.out_dir, max_steps=run.max_steps)
        rows.append(
            {
                "run": run.name,
                "architecture": run.architecture,
                "parameters": _parameters(run, status.run_context, cache),
                "step": status.step,
                "max_steps": status.max_steps,
                "eval_loss": status.eval_loss,
                "tokens_per_second": status.tokens_per_second,
                "mfu": status.mfu,
                "state": status.state,
                "hub_repo": run.hub_repo,
                "hub_branches": hub_branches(run.hub_repo) if run.hub_repo else None,
                "out_dir": run.out_dir,
            }
        )
    return rows


def _cells(row: dict[str, Any], with_hub: bool) -> list[str]:
    def num(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    cells = [
        row["run"],
        row["architecture"].removesuffix("ForCausalLM"),
        num(row["parameters"], ","),
        f"{row['step']}/{row['max_steps'] if row['max_steps'] is not None else '?'}",
        num(row["eval_loss"], ".4f"),
        num(row["tokens_per_second"], ",.0f"),
        "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%",
        row["state"],
    ]
    if with_hub:
        cells.append("-" if not row["hub_repo"] else num(row["hub_branches"], "d").replace("-", "?"))
    return cells


def format_status(rows: list[dict[str, Any]]) -> str:
    """An aligned table, then a count of runs per state."""
    with_hub = any(row["hub_repo"] for row in rows)
    header = [*COLUMNS, *(["hub branches"] if with_hub else [])]
    body = [_cells(row, with_hub) for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    left = {0, 1, COLUMNS.index("state")}

    def line(values: list[str]) -> str:
        text = "  ".join(
            v.ljust(w) if i in left else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )
        return text.rstrip()

    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    return "\n".join(
        [
            line(header),
            line(["-" * w for w in widths]),
            *map(line, body),
            "",
            f"{len(rows)} run(s): {summary}",
        ]
    )
