"""transformers warnings that say nothing true about a delphi run, dropped by logging filters (and the
HTTP clients' line per request, raised to WARNING).

- "`causal_conv1d_fn` is falling back to its reference PyTorch implementation because `causal_conv1d` is
  not installed" (and the same for `mamba_ssm`'s functions): in a delphi Mamba model the selective scan is
  delphi's (`delphi.mamba`), and delphi logs its own line naming the scan in use instead.
- "There were missing keys in the checkpoint model loaded: ['lm_head.weight']" when the Trainer resumes a
  model with tied embeddings: tied weights are saved once (under the embedding's name), the Trainer loads
  with strict=False and the tie stays in place, so nothing is missing. Dropped only when every key listed
  is a tied weight of a model registered here (and still alive), and no such model has that key untied.

Both are filters on the one transformers logger that emits the message (std `logging`, no patching);
records of any other text pass untouched.
"""

from __future__ import annotations

import ast
import logging
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only annotations: `delphi --help` imports this module and must not wait for torch
    import torch

KERNEL_LOGGER = "transformers.integrations.hub_kernels"  # listed, with why, in delphi.compat.LOGGERS
TRAINER_LOGGER = "transformers.trainer"
# the packages whose "not installed" fallback messages are dropped (mamba-ssm's CUDA extension and its conv)
KERNEL_PACKAGES = ("causal_conv1d", "mamba_ssm")
MISSING_KEYS = "There were missing keys in the checkpoint model loaded: "


class KernelFallbackFilter(logging.Filter):
    """Drops transformers' 'falling back ... because `causal_conv1d` / `mamba_ssm` is not installed'."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            "is falling back to its reference PyTorch implementation" in message
            and any(f"because `{package}` is not installed" in message for package in KERNEL_PACKAGES)
        )


class TiedKeysFilter(logging.Filter):
    """Drops the Trainer's 'missing keys' warning when every key in it is a tied weight of the registered
    models still alive, and untied in none of them (the record does not say which model was loaded)."""

    def __init__(self):
        super().__init__()
        self.models: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()

    def register(self, model: torch.nn.Module) -> None:
        self.models.add(model)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(MISSING_KEYS):
            return True
        try:
            keys = set(ast.literal_eval(message[len(MISSING_KEYS) :].rstrip().rstrip(".")))
        except (ValueError, SyntaxError, TypeError):
            return True
        tied, untied = set(), set()
        for model in list(self.models):
            names = tied_parameter_names(model)
            tied |= names
            untied |= {name for name, _ in model.named_parameters()} - names
        return not (keys and keys <= tied - untied)


_kernel_filter = KernelFallbackFilter()
_tied_filter = TiedKeysFilter()


def quiet_known_warnings(model: torch.nn.Module | None = None) -> None:
    """Install both filters (once per process); register `model`'s tied weights for the second.

    `delphi.models.build_model` calls it for every model it builds.
    """
    quiet_kernel_fallback_warnings()
    trainer_logger = logging.getLogger(TRAINER_LOGGER)
    if _tied_filter not in trainer_logger.filters:
        trainer_logger.addFilter(_tied_filter)
    if model is not None:
        _tied_filter.register(model)


def quiet_kernel_fallback_warnings() -> None:
    logger = logging.getLogger(KERNEL_LOGGER)
    if _kernel_filter not in logger.filters:
        logger.addFilter(_kernel_filter)


def tied_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that are the same tensor as an earlier-named one (what state dicts save once)."""
    first: dict[int, str] = {}
    tied = set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            tied.add(name)
        else:
            first[id(parameter)] = name
    return tied


# huggingface_hub's HTTP clients log every request at INFO ("HTTP Request: HEAD ... 200"): dozens of lines
# per command, which bury delphi's own INFO lines; their warnings and errors still show
HTTP_LOGGERS = ("httpx", "httpx2")


def quiet_http_requests() -> None:
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
