"""delphi: standardized, reproducible training of suites of small language models.

From Python (see `delphi.api`): `delphi.runs(path_or_hub_prefix)`, `delphi.checkpoints(run_or_repo)`,
`delphi.load(ref, step=None)`. They are imported on first use, so `import delphi` stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Checkpoint", "Run", "checkpoints", "load", "runs"]

if TYPE_CHECKING:
    from delphi.api import Checkpoint, Run, checkpoints, load, runs


def __getattr__(name: str):
    if name in __all__:
        from delphi import api

        return getattr(api, name)
    raise AttributeError(f"module 'delphi' has no attribute {name!r}")
