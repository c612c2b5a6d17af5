"""What the suite checks of every run to train before any run starts, without loading data or models.

Each check is the one `delphi train` runs at its start, so a problem found here is the error that run
would have stopped with: its input paths (tokenizer, data.path and a local `resume:` checkpoint, through
delphi.inputs), an out_dir it can create and write into, its optimizer values and names
(delphi.train.optimizer) and its batch split over the processes it will have. What needs the data or a model (a tokenizer folder that holds no tokenizer, the data's
token ids, ...) can still fail only when the run starts: that run fails alone.
"""

from __future__ import annotations

from delphi.errors import DelphiError
from delphi.suite.plan import SuiteRun


def run_problems(run: SuiteRun, *, processes: int, resumes: bool) -> list[str]:
    """Problems of one run, each naming the run; `resumes`: it continues from its own checkpoint, so
    its `resume:` setting is not read."""
    from delphi.hub.client import parse_hub_ref
    from delphi.inputs import check_local_or_hub, check_output_dir
    from delphi.recipe import load_recipe
    from delphi.train.optimizer import optimizer_value_problems, optimizer_values
    from delphi.train.outdir import check_resume_path

    recipe = load_recipe([run.recipe_file], list(run.overrides))
    checks = [
        lambda: check_local_or_hub(recipe.tokenizer, what="tokenizer"),
        lambda: check_local_or_hub(recipe.data.path, what="dataset", files_ok=True),
        lambda: recipe.batch_split(processes),
        lambda: check_output_dir(recipe.out_dir, what="out_dir"),
    ]
    if not resumes and recipe.resume not in ("auto", "never") and parse_hub_ref(recipe.resume) is None:
        checks.append(lambda: check_resume_path(recipe.resume))
    problems = []
    for check in checks:
        try:
            check()
        except DelphiError as e:
            problems.append(str(e))
    problems += optimizer_value_problems(optimizer_values(recipe.training))
    return [f"{run.name} ({run.recipe_file}): {problem}" for problem in problems]


def check_runs(runs: list[tuple[SuiteRun, bool]], *, processes: int) -> None:
    """Every (run, resumes) checked; one DelphiError listing every problem, before anything starts."""
    problems = [p for run, resumes in runs for p in run_problems(run, processes=processes, resumes=resumes)]
    if problems:
        raise DelphiError(
            f"{len(problems)} problem(s) in the runs of the suite; nothing was started:\n"
            + "\n".join(problems)
        )
