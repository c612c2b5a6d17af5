"""`delphi validate`, `delphi suite` and `delphi train` refuse the same recipes with the same line.

Every bad recipe of tests/test_trust.py, written to a file and given to each of the three commands
(in this process, through delphi.cli.main): each exits 2 and prints the same problem line, before any
run starts or any out_dir is made (delphi.recipe.recipe_problems is the one check they share).
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest
from tiny import write_recipe

from delphi.cli import main

ENTRY_POINTS = ("validate", "suite", "train")


def bad_recipes(data, tmp_path) -> dict[str, tuple[dict, str]]:
    """name -> (recipe keys to change, the problem line every entry point must print)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    shutil.copytree(data / "tok", tmp_path / "ts" / "tokenizer")
    cases = {
        "learning-rate": (
            {"training.learning_rate": -0.001},
            "training.learning_rate is -0.001; expected >= 0",
        ),
        "beta1": ({"training.adam_beta1": 1.5}, "training.adam_beta1 is 1.5; expected in [0, 1)"),
        "epsilon": ({"training.adam_epsilon": -1.0}, "training.adam_epsilon is -1.0; expected >= 0"),
        "weight-decay": ({"training.weight_decay": -0.1}, "training.weight_decay is -0.1; expected >= 0"),
        "scheduler": ({"training.lr_scheduler_type": "cosinus"}, "training.lr_scheduler_type in "),
        "optimizer": ({"training.optim": "adamw_nope"}, "training.optim in "),
        "tokenizer": (
            {"tokenizer": f"{tmp_path}/ts/tokenizr"},
            f"no such directory: '{tmp_path}/ts/tokenizr' (tokenizer); did you mean '{tmp_path}/ts/tokenizer'?",
        ),
        "data": (
            {"data.path": f"{data}/dta"},
            f"no such file or directory: '{data}/dta' (dataset); did you mean '{data}/data'?",
        ),
        "resume": (
            {"resume": f"{tmp_path}/run/step5"},
            f"no such directory: '{tmp_path}/run/step5' (resume); '{tmp_path}/run' does not exist either",
        ),
        "out-dir": ({"out_dir": f"{blocker}/run"}, f"{str(blocker)!r} is a file, not a directory"),
        "callback": ({"callbacks": ["nomod:Note"]}, "callback 'nomod:Note' cannot be imported"),
    }
    if importlib.util.find_spec("tensorboard") is None:
        cases["report-to"] = (
            {"training.report_to": "tensorboard"},
            "training.report_to asks for tensorboard, which is not installed: pip install tensorboard",
        )
    return cases


def run_command(capsys, argv: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def test_validate_suite_and_train_refuse_the_same_recipes_with_the_same_line(
    stories_data, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for name, (changes, line) in bad_recipes(stories_data, tmp_path).items():
        folder = tmp_path / name
        folder.mkdir()
        out_dir = changes.pop("out_dir", tmp_path / "runs" / name)
        recipe = write_recipe(folder / f"{name}.yaml", stories_data, out_dir, **changes)
        for command in ENTRY_POINTS:
            args = [command, str(recipe)] + (["--devices", "cpu"] if command == "suite" else [])
            status, output = run_command(capsys, args)
            assert status == 2, (name, command, output)
            assert "Traceback" not in output
            problem_lines = [text for text in output.splitlines() if line in text]
            assert problem_lines, f"{command} of the {name} recipe does not say {line!r}:\n{output}"
            if command != "validate":  # validate prints its table, then each recipe's problems
                # the error is one line, and the last one: the problem line itself
                error = [text for text in output.splitlines() if text.startswith(f"delphi {command}: error:")]
                assert len(error) == 1 and output.strip().splitlines()[-1].strip() == problem_lines[0].strip()
        assert not (tmp_path / "runs").exists(), f"the {name} recipe started a run"
