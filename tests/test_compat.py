"""Every name delphi relies on beyond transformers' public API (delphi/compat.py) is still there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from delphi.compat import LOGGERS, PRIVATE_NAMES, TRAINER_FILE_NAMES, resolve

DELPHI = Path(__file__).resolve().parents[1] / "delphi"


@pytest.mark.parametrize("name", sorted(PRIVATE_NAMES))
def test_private_name_still_exists(name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(
            f"{name} is gone from the installed library ({e}); delphi uses it because: {PRIVATE_NAMES[name]}"
        )


@pytest.mark.parametrize("name", sorted(LOGGERS))
def test_the_loggers_delphi_filters_are_those_transformers_logs_to(name):
    assert resolve(f"{name}.logger").name == name, (
        f"transformers logs elsewhere than {name}: update delphi.quiet"
    )


@pytest.mark.parametrize("name", sorted(TRAINER_FILE_NAMES))
def test_trainer_file_names_are_what_delphi_layout_expects(name):
    assert resolve(name) == TRAINER_FILE_NAMES[name], f"transformers renamed {name}: update delphi/layout.py"


def test_delphi_layout_spells_them_the_same(tmp_path):
    from delphi import layout

    assert layout.TRAINER_STATE_NAME == TRAINER_FILE_NAMES["transformers.trainer.TRAINER_STATE_NAME"]
    prefix = TRAINER_FILE_NAMES["transformers.trainer_utils.PREFIX_CHECKPOINT_DIR"]
    layout.trainer_checkpoint_dir(tmp_path, 7).mkdir()
    layout.checkpoint_dir(tmp_path, 7).mkdir()
    assert [p.name for p in layout.unfinished_saves(tmp_path)] == [f"{prefix}-7"]
    for key in ("OPTIMIZER_NAME", "SCHEDULER_NAME", "SCALER_NAME"):
        assert layout.is_resume_state(TRAINER_FILE_NAMES[f"transformers.trainer.{key}"]), key


def test_resolve_finds_public_and_reports_missing_names():
    assert resolve("transformers.Trainer.train") is not None
    with pytest.raises(AttributeError):
        resolve("transformers.Trainer.no_such_method_anywhere")


def test_no_private_transformers_name_outside_compat():
    """A private transformers/accelerate name anywhere else in delphi/ is a break waiting for a release."""
    pattern = re.compile(
        r"(transformers|accelerate)[\w.]*\._[a-z]|from (transformers|accelerate)[\w.]* import _"
    )
    offenders = [
        f"{path.relative_to(DELPHI)}:{n}"
        for path in DELPHI.rglob("*.py")
        if path.name != "compat.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
