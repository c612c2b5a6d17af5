"""A suite is recipes x seeds: each becomes one `SuiteRun`, an ordinary `delphi train` command line.

Seed `k` of a recipe is the recipe with three `--set` overrides: `seeds.init` and `seeds.data` raised
by `k` (so seed 0 is the recipe as written) and `name` suffixed `-seed{k}`. The name reaches the
out_dir through its `{name}` placeholder (`out/{name}` -> `out/llama2-100k-seed1`); a recipe whose
out_dir has no placeholder gets `-seed{k}` appended to it instead, so two seeds never share an out_dir.
Without `--seeds` every recipe runs as written, under its own name.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from delphi.errors import DelphiError
from delphi.recipe import load_recipe
from delphi.validate import recipe_files


@dataclass(frozen=True)
class SuiteRun:
    """One run of a suite: a recipe file, the overrides that make it this run, and where it trains."""

    name: str  # the run's name (recipe name, plus -seed{k})
    recipe_name: str  # the recipe's own name
    seed: int | None  # k of --seeds, or None when the recipe runs as written
    recipe_file: str
    overrides: tuple[str, ...]  # --set values for `delphi train`, the user's first
    out_dir: str
    architecture: str
    max_steps: int | None  # the recipe's training.max_steps, when it sets one (else epochs decide)
    hub_repo: str | None

    def train_args(self) -> list[str]:
        """`delphi train` arguments: the recipe file and every override."""
        args = [self.recipe_file]
        for override in self.overrides:
            args += ["--set", override]
        return args

    def command(self) -> list[str]:
        """This run as one process: the same code path as `delphi train`."""
        return [sys.executable, "-m", "delphi", "train", *self.train_args()]


def _quoted(key: str, value: str) -> str:
    """KEY="VALUE": a JSON string is a YAML string, so a name like `1e3` or `yes` stays a string."""
    return f"{key}={json.dumps(value)}"


def seed_overrides(recipe, seed: int, out_dir_has_name: bool) -> list[str]:
    """The `--set` overrides that turn `recipe` into its seed `seed` variant."""
    name = f"{recipe.name}-seed{seed}"
    overrides = [
        f"seeds.init={recipe.seeds.init + seed}",
        f"seeds.data={recipe.seeds.data + seed}",
        _quoted("name", name),
    ]
    if not out_dir_has_name:
        overrides.append(_quoted("out_dir", f"{recipe.out_dir.rstrip('/')}-seed{seed}"))
    return overrides


def plan_suite(
    paths: list[str | Path],
    *,
    only: list[str] | tuple[str, ...] = (),
    seeds: list[int] | tuple[int, ...] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> list[SuiteRun]:
    """Every run of the suite, in order: recipe files under `paths` (base*.yaml skipped) x `seeds`.

    `only`: shell patterns matched against recipe names (any may match). Every recipe is loaded and
    validated here, so a broken one stops the suite before anything trains; two runs that would
    share an out_dir are refused.
    """
    files = recipe_files(paths)
    if seeds is not None:
        if not seeds:
            raise DelphiError("--seeds needs at least one seed, e.g. --seeds 0 1 2")
        bad = [s for s in seeds if s < 0]
        if bad:
            raise DelphiError(f"--seeds {bad[0]} is negative; expected seeds 0, 1, 2, ...")
        if len(set(seeds)) != len(seeds):
            raise DelphiError(f"--seeds {' '.join(map(str, seeds))} repeats a seed")
    runs: list[SuiteRun] = []
    problems: list[str] = []
    matched = set()
    for file in files:
        try:
            recipe = load_recipe([file], list(overrides))
        except DelphiError as e:
            if not only or any(fnmatch.fnmatchcase(file.stem, pattern) for pattern in only):
                problems.append(str(e))  # (a broken recipe that --only leaves out does not matter)
            continue
        if only and not any(fnmatch.fnmatchcase(recipe.name, pattern) for pattern in only):
            continue
        matched.update(p for p in only if fnmatch.fnmatchcase(recipe.name, p))
        variants: list[tuple[int | None, list[str]]] = [(None, [])]
        if seeds is not None:
            # Does out_dir follow the name? Load once with another name and compare.
            renamed = load_recipe([file], [*overrides, _quoted("name", recipe.name + "-x")])
            has_name = renamed.out_dir != recipe.out_dir
            variants = [(k, seed_overrides(recipe, k, has_name)) for k in seeds]
        for seed, extra in variants:
            run_recipe = load_recipe([file], [*overrides, *extra]) if extra else recipe
            max_steps = run_recipe.training.get("max_steps")
            runs.append(
                SuiteRun(
                    name=run_recipe.name,
                    recipe_name=recipe.name,
                    seed=seed,
                    recipe_file=str(file),
                    overrides=(*overrides, *extra),
                    out_dir=run_recipe.out_dir,
                    architecture=str(run_recipe.model.get("architecture")),
                    max_steps=int(max_steps) if isinstance(max_steps, int) and max_steps > 0 else None,
                    hub_repo=run_recipe.hub.repo,
                )
            )
    if problems:
        raise DelphiError(
            f"{len(problems)} recipe(s) of the suite have problems; nothing was started:\n"
            + "\n".join(problems)
        )
    unmatched = [p for p in only if p not in matched]
    if unmatched:
        names = ", ".join(sorted({r.recipe_name for r in runs})) or "none"
        raise DelphiError(
            f"--only {unmatched[0]!r} matches no recipe of the suite (recipes matched: {names})"
        )
    if not runs:
        raise DelphiError("the suite has no runs")
    seen: dict[str, str] = {}
    for run in runs:
        key = str(Path(run.out_dir).resolve())
        if key in seen:
            raise DelphiError(
                f"runs {seen[key]} and {run.name} would share out_dir {run.out_dir!r}; give each recipe "
                "its own out_dir (e.g. out/{name})"
            )
        seen[key] = run.name
    return runs
