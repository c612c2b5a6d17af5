"""transformers' own `MambaMixer.forward`, run with another selective scan.

`MambaMixer.forward` calls two module-level functions of transformers' `modeling_mamba`:
`mamba_selective_scan` (the full-sequence scan) and `mamba_inner_fn` (mamba-ssm's fused training path,
None without mamba-ssm). `forward_with_scan(scan)` is a copy of that forward (the same code object, under
the same decorators) whose global namespace maps the first name to `scan` and the second to "no fused
path". Nothing in transformers' module changes, so stock models in the same process run as before, and
everything but the scan (projections, convolution, cache handling, the one-token generation step) stays
transformers' code: a delphi model remains a plain `MambaForCausalLM`.

When a release stops calling the scan by that name (or wraps forward in something that is not a plain
decorated function), `IncompatibleForward` says what changed, and `delphi.mamba` falls back to
transformers' own forward, which is correct but slow.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable

from delphi.compat import private

MIXER = "transformers.models.mamba.modeling_mamba.MambaMixer"
SCAN_NAME = "mamba_selective_scan"
FUSED_NAME = "mamba_inner_fn"
# both listed in delphi.compat.PRIVATE_NAMES: the names swapped in the copy of forward
private(f"transformers.models.mamba.modeling_mamba.{SCAN_NAME}")
private(f"transformers.models.mamba.modeling_mamba.{FUSED_NAME}")


class IncompatibleForward(RuntimeError):
    """transformers' MambaMixer.forward no longer has the shape `forward_with_scan` relies on."""


def mixer_class() -> type:
    return private(MIXER)


def forward_with_scan(scan: Callable) -> Callable:
    """`MambaMixer.forward` (unbound: call it as `f(mixer, hidden_states, ...)`) running `scan`, which takes
    transformers' `mamba_selective_scan` arguments, for every full-sequence scan."""
    return _rebind(mixer_class().forward, {SCAN_NAME: scan, FUSED_NAME: _no_fused_path})


def _no_fused_path(*args, **kwargs) -> None:
    """What transformers' `mamba_inner_fn` returns without mamba-ssm: forward then takes its unfused path."""
    return None


def _rebind(function: Callable, names: dict[str, Callable]) -> Callable:
    """A copy of `function` whose innermost wrapped function sees `names` as globals.

    Each decorator layer (functools.wraps, `__wrapped__` set) is copied with its reference to the function
    it wraps pointed at the copy below it, so the decorators keep working.
    """
    inner = getattr(function, "__wrapped__", None)
    if not isinstance(function, types.FunctionType):
        raise IncompatibleForward(f"{function!r} is not a plain function")
    if inner is None:
        missing = [name for name in names if name not in function.__code__.co_names]
        if missing:
            raise IncompatibleForward(f"{function.__qualname__} no longer calls {', '.join(missing)}")
        return _copy(function, {**function.__globals__, **names}, function.__closure__)
    cells = list(function.__closure__ or ())
    holders = [i for i, cell in enumerate(cells) if _contents(cell) is inner]
    if len(holders) != 1:
        raise IncompatibleForward(f"cannot tell how a decorator of {function.__qualname__} calls it")
    copied_inner = _rebind(inner, names)
    cells[holders[0]] = types.CellType(copied_inner)
    copied = _copy(function, function.__globals__, tuple(cells))
    copied.__wrapped__ = copied_inner
    return copied


def _copy(function: types.FunctionType, namespace: dict, closure: tuple | None) -> types.FunctionType:
    copied = types.FunctionType(
        function.__code__, namespace, function.__name__, function.__defaults__, closure
    )
    copied.__kwdefaults__ = function.__kwdefaults__
    functools.update_wrapper(copied, function)
    del copied.__wrapped__  # a copy, not a wrapper of the original; _rebind links the copies
    return copied


def _contents(cell: types.CellType):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None
