"""A step folder resumes on any process layout: 1 process, N processes (DDP), FSDP.

Trainer writes resume state in the layout's own format: plain and DDP runs an index-keyed optimizer
state (`optimizer.pt`), FSDP runs (with `fsdp_state_dict_type: FULL_STATE_DICT`) a full optimizer state
keyed by parameter name (`optimizer.bin`) and a second copy of the weights (`pytorch_model_fsdp.bin`).
A step folder keeps the weights once (`model.safetensors`: the FSDP copy is dropped when it is
finalized) and whichever optimizer format its run wrote. To resume under another layout, delphi builds
a *resume view* beside it (`.resume-step{N}/`: hard links to its files, plus what this layout reads,
converted with torch's own `torch.distributed.checkpoint.state_dict` functions) and hands that to
Trainer; the step folder itself is never changed, and the view is removed when training ends.
Everything that decides the data order (step, epoch, seed) is in `trainer_state.json` and
`checkpoint.json`, identical in every layout.
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

from delphi.atomic import link_or_copy
from delphi.layout import RESUME_VIEW_PREFIX, WEIGHTS_FILE
from delphi.train.checkpoints import FSDP_WEIGHTS

logger = logging.getLogger(__name__)

INDEX_OPTIMIZER = "optimizer.pt"  # transformers.trainer.OPTIMIZER_NAME: torch's optimizer.state_dict()
NAMED_OPTIMIZER = "optimizer.bin"  # accelerate's FSDP optimizer file: the full state, keyed by parameter name


def resume_view_dir(folder: Path) -> Path:
    return folder.parent / f"{RESUME_VIEW_PREFIX}{folder.name}"


def needs_view(folder: Path, fsdp: bool) -> bool:
    """True when `folder` lacks a file that this layout's Trainer reads to resume."""
    folder = Path(folder)
    if fsdp:
        return not (folder / FSDP_WEIGHTS).is_file() or not (folder / NAMED_OPTIMIZER).is_file()
    return not (folder / INDEX_OPTIMIZER).is_file() and (folder / NAMED_OPTIMIZER).is_file()


def build_resume_view(folder: Path, model, optimizer, *, fsdp: bool) -> Path:
    """A folder with `folder`'s files (hard links) plus what resuming under this layout reads.

    `model` is the unwrapped model and `optimizer` a fresh optimizer over its parameters, grouped as the
    Trainer groups them (`Trainer.create_optimizer`); both are only used to translate the state.
    """
    import torch

    folder = Path(folder)
    view = resume_view_dir(folder)
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir()
    for path in folder.iterdir():
        if path.is_file():
            link_or_copy(path, view / path.name)
    if fsdp:
        if not (view / FSDP_WEIGHTS).is_file():
            torch.save(full_model_state(folder, model), view / FSDP_WEIGHTS)
        if not (view / NAMED_OPTIMIZER).is_file():
            index_state = torch.load(folder / INDEX_OPTIMIZER, map_location="cpu", weights_only=True)
            torch.save(named_optimizer_state(model, optimizer, index_state), view / NAMED_OPTIMIZER)
    elif not (view / INDEX_OPTIMIZER).is_file():
        named_state = torch.load(folder / NAMED_OPTIMIZER, map_location="cpu", weights_only=True)
        torch.save(index_optimizer_state(model, optimizer, named_state), view / INDEX_OPTIMIZER)
    logger.info("resuming %s under another process layout through %s", folder.name, view)
    return view


def named_optimizer_state(model, optimizer, index_state: dict) -> dict:
    """torch's index-keyed `optimizer.state_dict()` -> the full state keyed by parameter name (FSDP's)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    optimizer.load_state_dict(index_state)
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))


def index_optimizer_state(model, optimizer, named_state: dict) -> dict:
    """The full state keyed by parameter name -> torch's index-keyed `optimizer.state_dict()`."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, named_state)
    return optimizer.state_dict()


def full_model_state(folder: Path, model) -> dict:
    """The model's full state dict (tied weights under every name) with the weights of `folder`."""
    from safetensors.torch import load_file

    copy_of_model = copy.deepcopy(model)
    missing, unexpected = copy_of_model.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=False)
    # a tied weight is stored once, under its first name; only a parameter of its own may be missing
    own_names = {name for name, _ in copy_of_model.named_parameters(remove_duplicate=True)}
    untied_missing = [name for name in missing if name in own_names]
    if untied_missing or unexpected:
        raise ValueError(
            f"{folder / WEIGHTS_FILE} does not fit the model: missing {untied_missing}, extra {unexpected}"
        )
    return copy_of_model.state_dict()
