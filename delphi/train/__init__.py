"""Training: `DelphiTrainer` plus the pieces it is made of (data order, checkpoint schedule, checkpoints).

`from delphi.train import DelphiTrainer` works without importing transformers until it is used.
"""

from __future__ import annotations

__all__ = ["DelphiTrainer"]


def __getattr__(name: str):
    if name == "DelphiTrainer":
        from delphi.train.trainer import DelphiTrainer

        return DelphiTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
