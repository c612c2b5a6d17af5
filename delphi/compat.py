"""What delphi uses of transformers (and accelerate) beyond their public API: one place, with why.

Nothing else under `delphi/` may touch a private (underscore) name or a module-internal helper of
those libraries; it goes through an accessor here instead, and `PRIVATE_NAMES` lists each one with the
reason it is needed. `tests/test_compat.py` resolves every entry and fails, naming it, when a release
renames or removes it, so a break shows up as one clear test failure rather than mid-training.
"""

from __future__ import annotations

import importlib
from typing import Any

# dotted name -> why delphi cannot do without it (kept as short as the list is)
PRIVATE_NAMES: dict[str, str] = {}


def resolve(dotted: str) -> Any:
    """The object a dotted name ("pkg.module.Class.attr") refers to; ImportError/AttributeError if gone."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import any prefix of {dotted!r}")
