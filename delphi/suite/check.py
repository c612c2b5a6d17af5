"""What the suite checks of every run to train before any run starts, without loading data or models.

Each check is the one `delphi train` (and `delphi validate`) runs at its start,
`delphi.recipe.recipe_problems`, so a problem found here is the error that run would have stopped with:
its input paths, an out_dir it can create and write into, its optimizer values and its batch split over
the processes it will have. What needs the data or a model (a tokenizer folder that holds no tokenizer,
the data's token ids, ...) can still fail only when the run starts: that run fails alone.
"""

from __future__ import annotations

from delphi.errors import DelphiError
from delphi.recipe import load_recipe, recipe_problems
from delphi.suite.plan import SuiteRun


def run_problems(run: SuiteRun, *, processes: int, resumes: bool) -> list[str]:
    """Problems of one run (delphi.recipe.recipe_problems), each naming the run; `resumes`: it continues
    from its own checkpoint, so its `resume:` setting is not read."""
    recipe = load_recipe([run.recipe_file], list(run.overrides))
    problems = recipe_problems(recipe, world_size=processes, resumes=resumes)
    return [f"{run.name} ({run.recipe_file}): {problem}" for problem in problems]


def check_runs(runs: list[tuple[SuiteRun, bool]], *, processes: int) -> None:
    """Every (run, resumes) checked; one DelphiError listing every problem, before anything starts."""
    problems = [p for run, resumes in runs for p in run_problems(run, processes=processes, resumes=resumes)]
    if problems:
        raise DelphiError(
            f"{len(problems)} problem(s) in the runs of the suite; nothing was started:\n"
            + "\n".join(problems)
        )
