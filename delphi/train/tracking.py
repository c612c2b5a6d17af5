"""W&B for a run: the login checked before any work, the project set from the recipe, the run flushed at
the end. transformers' own `WandbCallback` does the logging (`report_to`, set by delphi.train.arguments)."""

from __future__ import annotations

import os
from pathlib import Path

from delphi.errors import DelphiError
from delphi.recipe import Recipe


def check_wandb(recipe: Recipe) -> None:
    """A recipe that logs to W&B needs a login (or an offline mode): one line now, not wandb's prompt later."""
    if not recipe.wandb:
        return
    mode = os.environ.get("WANDB_MODE")
    if mode is not None and mode.strip() == "":
        raise DelphiError("WANDB_MODE is set but empty; use online, offline or disabled (or unset it)")
    if mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    raise DelphiError(
        f"recipe logs to W&B ({recipe.wandb!r}) but no W&B login was found; set WANDB_API_KEY, "
        "run `wandb login`, or set WANDB_MODE=offline (sync later with `wandb sync`)"
    )


def set_wandb_env(recipe: Recipe) -> None:
    """The recipe's `wandb: entity/project` as the environment transformers' WandbCallback reads."""
    entity_project = recipe.wandb_entity_project
    if entity_project is None:
        return
    entity, project = entity_project
    os.environ["WANDB_PROJECT"] = project
    if entity:
        os.environ["WANDB_ENTITY"] = entity
    os.environ.setdefault("WANDB_LOG_MODEL", "false")


def finish_wandb(recipe: Recipe) -> None:
    """Flush the W&B run: transformers' callback leaves it open for more logging."""
    if not recipe.wandb:
        return
    import wandb  # only for a run that logs to W&B (it is slow to import)

    if wandb.run is not None:
        wandb.finish()
