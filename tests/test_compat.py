"""Every private name delphi relies on (delphi/compat.py) still exists in the installed libraries."""

from __future__ import annotations

import pytest

from delphi.compat import PRIVATE_NAMES, resolve


@pytest.mark.parametrize("name", sorted(PRIVATE_NAMES))
def test_private_name_still_exists(name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(
            f"{name} is gone from the installed library ({e}); delphi uses it because: {PRIVATE_NAMES[name]}"
        )


def test_resolve_finds_public_and_reports_missing_names():
    assert resolve("transformers.Trainer.train") is not None
    with pytest.raises(AttributeError):
        resolve("transformers.Trainer.no_such_method_anywhere")
