"""Does a value read from YAML fit a type annotation? The checker behind every recipe key's type error.

Recipe sections are dataclasses and `training:` is `TrainingArguments`: their annotations say what each
key takes, so one checker words every "is X; expected Y" the same way (enums with the nearest name).
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Literal

from delphi.errors import did_you_mean


def type_problem(value: Any, annotation: Any) -> str:
    """'' when `value` (as read from YAML) fits `annotation`, else "is X; expected Y" for an error message."""
    if _fits(value, annotation):
        return ""
    enums = [a for a in _members(annotation) if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums and isinstance(value, str):
        choices = [m.value for e in enums for m in e]
        return f"is {value!r}; expected one of {choices}{did_you_mean(value, choices)}"
    return f"is {value!r}; expected {_describe(annotation)}"


def _members(annotation: Any) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _fits(value: Any, annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):  # `Enum | str` fields still need a valid enum value
            return any(_fits(value, e) for e in enums)
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin in (list, tuple):
        return isinstance(value, list) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, annotation) or value in {m.value for m in annotation}
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # a typing construct we do not model: leave it to the library that reads it


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is None or annotation is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))
