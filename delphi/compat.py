"""What delphi uses of transformers beyond its public API: one place, with why.

Nothing else under `delphi/` (or `tests/`) touches a private (underscore) name of transformers or
accelerate: it goes through this module, and `PRIVATE_NAMES` lists each one with the reason.
`TRAINER_FILE_NAMES` lists the names transformers' Trainer gives the files of a checkpoint, which
`delphi.layout` spells out (so that reading a run never imports transformers) and which delphi renames
and prunes. `tests/test_compat.py` resolves every entry and fails, naming it, when a release renames or
removes one, so a break shows up as one clear test failure rather than mid-training.
"""

from __future__ import annotations

import importlib
from typing import Any

# dotted name -> why delphi cannot do without it
PRIVATE_NAMES: dict[str, str] = {
    "transformers.utils.hub._hf_api": (
        "tests only: transformers keeps one HfApi, created with the hub endpoint of the moment; the tests' "
        "local hub servers change the endpoint, so `forget_hub_client` drops that instance"
    ),
}

# dotted name of a transformers constant -> the value delphi.layout relies on
TRAINER_FILE_NAMES: dict[str, str] = {
    "transformers.trainer_utils.PREFIX_CHECKPOINT_DIR": "checkpoint",  # Trainer saves into checkpoint-{N}
    "transformers.trainer.TRAINER_STATE_NAME": "trainer_state.json",
    "transformers.trainer.OPTIMIZER_NAME": "optimizer.pt",
    "transformers.trainer.SCHEDULER_NAME": "scheduler.pt",
    "transformers.trainer.SCALER_NAME": "scaler.pt",
    "transformers.trainer.TRAINING_ARGS_NAME": "training_args.bin",
}


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


def forget_hub_client(monkeypatch) -> None:
    """Make transformers create its shared HfApi anew, with the current HF_ENDPOINT (tests)."""
    import transformers.utils.hub

    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
