"""Loading a user's own code: a recipe's callbacks, `delphi batches --stat`'s function.

One function and one `sys.path` policy for both: a name is `module:attribute` or `path/to/file.py:attribute`.
A module is imported from the usual import path first; when it is not found there, the current directory
and the given search directories (a recipe's own folder) are added to `sys.path` (and kept once the module
is found there, so that its own later imports resolve too; removed again when it is not) and it is imported
from them. A file is found as given, else in
the current directory, else in a search directory. So the same name works under `delphi ...`,
`python -m delphi ...` and `accelerate launch`, whose `sys.path` differ.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

from delphi.errors import DelphiError


def import_object(spec: str, search_dirs: list | tuple = (), *, what: str, form: str) -> Any:
    """The object `spec` names (see the module docstring); `what` and `form` word the errors, e.g.
    what="callback 'x:Y'", form="'package.module:ClassName'"."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not re.fullmatch(r"\w+", attr):
        raise DelphiError(f"{what} must look like {form}")
    dirs = list(dict.fromkeys(str(d) for d in [os.getcwd(), *search_dirs]))
    if module_name.endswith(".py"):
        module = _import_file(Path(module_name), dirs, what)
    else:
        if not re.fullmatch(r"[\w.]+", module_name):
            raise DelphiError(f"{what} must look like {form}")
        try:
            module = _import_module(module_name, dirs)
        except ModuleNotFoundError as e:
            where = ", ".join([*dirs, "the Python path"])
            raise DelphiError(
                f"{what} cannot be imported: no module named {e.name!r} (looked in {where})"
            ) from e
        except Exception as e:  # ImportError, or anything the module raises on import
            raise DelphiError(f"{what} cannot be imported: {type(e).__name__}: {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise DelphiError(f"{what} cannot be imported: module {module_name!r} has no {attr!r}") from e


def _import_module(module_name: str, dirs: list[str]) -> types.ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name not in (module_name.split(".")[0], module_name):
            raise  # the module was found but one of its own imports is missing
        extra = [d for d in dirs if d not in sys.path]
        if not extra:
            raise
        sys.path[1:1] = extra
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module_name)
        except BaseException:  # not found there either: the folders go (a later import must not see them)
            for folder in extra:
                sys.path.remove(folder)
            raise


def _import_file(file: Path, dirs: list[str], what: str) -> types.ModuleType:
    candidates = [file] if file.is_absolute() else [Path(d) / file for d in dirs]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DelphiError(f"{what}: file {str(file)!r} not found (looked in {', '.join(dirs)})")
    module_spec = importlib.util.spec_from_file_location(found.stem, found)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise DelphiError(f"{what} cannot be imported: {type(e).__name__}: {e}") from e
    return module


def import_callback(spec: str, search_dirs: list | tuple = ()) -> type:
    """The `transformers.TrainerCallback` subclass a recipe's `callbacks:` entry names."""
    from transformers import TrainerCallback

    what = f"callback {spec!r}"
    cls = import_object(spec, search_dirs, what=what, form="'package.module:ClassName'")
    if not (isinstance(cls, type) and issubclass(cls, TrainerCallback)):
        raise DelphiError(f"{what} is not a transformers.TrainerCallback subclass")
    return cls


def import_function(spec: str, search_dirs: list | tuple = ()) -> Any:
    """The function `delphi batches --stat` names."""
    what = f"--stat {spec!r}"
    function = import_object(spec, search_dirs, what=what, form="'module:function' or 'file.py:function'")
    if not callable(function):
        raise DelphiError(f"{what} is not callable")
    return function
