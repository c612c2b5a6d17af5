"""What delphi uses of transformers beyond its public API: one place, with why.

Nothing else under `delphi/` (or `tests/`) touches a private (underscore) name of transformers or
accelerate: it goes through this module, and `PRIVATE_NAMES` lists each one with the reason.
`LOGGERS` names the transformers loggers delphi filters. `TRAINER_FILE_NAMES` lists the names transformers' Trainer gives the files of a checkpoint, which
`delphi.layout` spells out (so that reading a run never imports transformers) and which delphi renames
and prunes. `tests/test_compat.py` resolves every entry and fails, naming it, when a release renames or
removes one, so a break shows up as one clear test failure rather than mid-training.
"""

from __future__ import annotations

import importlib
from typing import Any

# dotted name -> why delphi cannot do without it
PRIVATE_NAMES: dict[str, str] = {
    "transformers.models.mamba.modeling_mamba.MambaMixer": (
        "the Mamba layer delphi.mamba runs with its own selective scan; not exported at transformers' top level"
    ),
    "transformers.models.mamba.modeling_mamba.mamba_selective_scan": (
        "the global name MambaMixer.forward calls the scan by: delphi.mamba's copy of forward maps it to "
        "delphi's scan, and the reference/mambapy paths are its unwrapped PyTorch original"
    ),
    "transformers.models.mamba.modeling_mamba.mamba_inner_fn": (
        "mamba-ssm's fused training shortcut MambaMixer.forward tries first: delphi.mamba's copy of forward "
        "maps it to 'none' so that the chosen scan runs even where mamba-ssm is installed"
    ),
    "transformers.utils.hub._hf_api": (
        "tests only: transformers keeps one HfApi, created with the hub endpoint of the moment; the tests' "
        "local hub servers change the endpoint, so `forget_hub_client` drops that instance"
    ),
}

# transformers' loggers that delphi.quiet filters (through the standard `logging` API, by name) -> why
LOGGERS: dict[str, str] = {
    "transformers.integrations.hub_kernels": (
        "emits the 'causal_conv1d / mamba_ssm not installed' warnings that delphi.quiet replaces with "
        "delphi's own line naming the scan in use"
    ),
    "transformers.trainer": (
        "emits 'missing keys [lm_head.weight]' on resuming a model with tied embeddings (tied weights are "
        "not saved), which delphi.quiet drops"
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


def private(dotted: str) -> Any:
    """The object behind a private name delphi uses; it must be listed in PRIVATE_NAMES, which is what keeps
    the list complete (tests/test_compat.py checks each entry)."""
    if dotted not in PRIVATE_NAMES:
        raise KeyError(f"{dotted} is not listed in delphi.compat.PRIVATE_NAMES")
    return resolve(dotted)
