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
    "transformers.integrations.hub_kernels.logger": (
        "emits the 'causal_conv1d / mamba_ssm not installed' warnings that delphi.quiet replaces with "
        "delphi's own line naming the scan in use"
    ),
    "transformers.trainer.logger": (
        "emits 'missing keys [lm_head.weight]' on resuming a model with tied embeddings (tied weights are "
        "not saved), which delphi.quiet drops"
    ),
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


def private(dotted: str) -> Any:
    """The object behind a private name delphi uses; it must be listed in PRIVATE_NAMES, which is what keeps
    the list complete (tests/test_compat.py checks each entry)."""
    if dotted not in PRIVATE_NAMES:
        raise KeyError(f"{dotted} is not listed in delphi.compat.PRIVATE_NAMES")
    return resolve(dotted)
