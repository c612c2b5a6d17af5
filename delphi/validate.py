"""`delphi validate`: check whole folders of recipes in seconds, without data or weights.

Every recipe is loaded with its bases and overrides checked, then checked as `delphi train` and
`delphi suite` check it before they start (`delphi.recipe.recipe_problems`: input paths, out_dir,
optimizer values, ...; a hub id is not contacted), then its model is built on the meta device (shapes
only), so a typo in a suite of twenty recipes shows up before any run starts.

Base files are skipped when a folder is scanned: by convention they are named `base*.yaml` (e.g.
`base.yaml`, `base-llama2.yaml`) and are incomplete on their own. A file named explicitly is always
checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from delphi.errors import DelphiError
from delphi.models import build_model, count_parameters
from delphi.recipe import load_recipe, recipe_problems, refusal

COLUMNS = ("recipe", "architecture", "parameters", "non_embedding", "tokens_per_step")


def recipe_files(paths: list[str | Path]) -> list[Path]:
    """The files named, plus every non-base `*.yaml` / `*.yml` under the folders named, in order; a
    DelphiError when that is none (a folder of no recipes is a mistyped folder, not a passing check)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = [*path.rglob("*.yaml"), *path.rglob("*.yml")]
            files += sorted(f for f in found if not f.name.startswith("base"))
        else:
            files.append(path)
    if not files:
        raise DelphiError(f"no recipe files (*.yaml, not base*.yaml) under {', '.join(map(str, paths))}")
    return files


def validate_paths(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One row per recipe: recipe, architecture, parameters, non_embedding, tokens_per_step, error.

    A broken recipe gives a row with `error` set (the other columns empty), never an exception, so one
    bad file does not hide the state of the others.
    """
    rows = []
    for file in recipe_files(paths):
        row: dict[str, Any] = dict.fromkeys(COLUMNS, "") | {"recipe": str(file), "error": ""}
        try:
            recipe = load_recipe([file])
            problems = recipe_problems(recipe, reach_hub=False)
            if problems:
                raise DelphiError(refusal(recipe.name, problems))
            total, non_embedding = count_parameters(build_model(recipe.model, device="meta"))
            row.update(
                architecture=recipe.model["architecture"],
                parameters=total,
                non_embedding=non_embedding,
                tokens_per_step=recipe.tokens_per_step,
            )
        except DelphiError as e:
            row["error"] = str(e)
        except Exception as e:  # transformers rejecting a config it accepted: still just this row
            row["error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """An aligned table (numbers with thousands separators), then the full text of each error."""
    header = [*COLUMNS, "status"]
    cells = [
        [
            *(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in COLUMNS),
            "ERROR" if row["error"] else "ok",
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    numeric = {COLUMNS.index(c) for c in ("parameters", "non_embedding", "tokens_per_step")}

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    out = [line(header), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    out = [text.rstrip() for text in out]
    for row in rows:
        if row["error"]:
            out += ["", f"{row['recipe']}:", *("  " + text for text in row["error"].splitlines())]
    return "\n".join(out)
