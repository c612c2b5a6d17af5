"""Loading a recipe: YAML files with inheritance, `--set` overrides, merged, checked, built.

Files inherit through `base:` (a path or list of paths relative to the file; bases first, the file last,
later values win, mappings merge key by key, lists replace). An optional top-level `name:` names the run;
by default it is the stem of the last file given. Every problem is reported at once, naming the file
that set the bad key, before any data, tokenizer or weights are touched.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from delphi.errors import DelphiError
from delphi.recipe.problems import merged_problems, refusal
from delphi.recipe.schema import Recipe


class _Loader(yaml.SafeLoader):
    """safe_load, but `5e-4` is a float as in YAML 1.2 (PyYAML's YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise DelphiError(f"{source} is not valid YAML: {e}") from e


def _file_layers(path: Path, chain: tuple[Path, ...]) -> list[tuple[str, dict]]:
    """(source, mapping) layers in merge order: the file's bases (recursively), then the file itself."""
    label = os.path.normpath(path)
    if path.resolve() in chain:
        cycle = " -> ".join(os.path.relpath(p) for p in (*chain, path.resolve()))
        raise DelphiError(f"recipe bases form a cycle: {cycle}")
    if not path.is_file():
        named_by = f" (the base named in {os.path.normpath(chain[-1])})" if chain else ""
        raise DelphiError(f"recipe file {label} does not exist{named_by}")
    data = parse_yaml(path.read_text(), label)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DelphiError(f"{label} must hold a mapping of recipe keys, not {type(data).__name__}")
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise DelphiError(f"'base' in {label} must be a file name or a list of them, got {bases!r}")
    layers = []
    for base in bases:
        layers += _file_layers(path.parent / base, (*chain, path.resolve()))
    return [*layers, (label, data)]


def _override_layer(override: str) -> dict:
    """ "training.learning_rate=1e-3" -> {"training": {"learning_rate": 0.001}} (value read as YAML)."""
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise DelphiError(f"override {override!r} must look like KEY=VALUE, e.g. training.learning_rate=1e-3")
    layer: Any = parse_yaml(value, f"override {override!r}")
    for part in reversed(parts):
        layer = {part: layer}
    return layer


def _merge(into: dict, layer: dict, source: str, origins: dict, prefix: tuple = ()) -> None:
    """Merge `layer` into `into` in place; record in `origins` which source set each key path last."""
    for key, value in layer.items():
        path = (*prefix, key)
        if not (isinstance(value, dict) and isinstance(into.get(key), dict)):
            into[key] = {} if isinstance(value, dict) else copy.deepcopy(value)
            for replaced in [p for p in origins if p[: len(path)] == path]:
                del origins[replaced]
        origins[path] = source
        if isinstance(value, dict):
            _merge(into[key], value, source, origins, path)


def load_recipe(paths: list[str | Path] | str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load, merge (in order), override and validate recipe files; DelphiError lists every problem."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DelphiError("no recipe file given")
    layers = [layer for p in paths for layer in _file_layers(Path(p), ())]
    layers += [(f"--set {o}", _override_layer(o)) for o in overrides]
    merged: dict = {}
    origins: dict = {}
    for source, layer in layers:
        _merge(merged, layer, source, origins)
    sources = tuple(dict.fromkeys(source for source, _ in layers))
    name = merged.pop("name", None) or Path(paths[-1]).stem
    errors = merged_problems(merged, origins, sources)
    if not isinstance(name, str):
        errors.insert(0, f"name in {origins[('name',)]} is {name!r}; expected str")
    if errors:
        raise DelphiError(refusal(name, errors))
    return _build(Recipe, merged, name=name, sources=sources)


def _build(cls: type, data: dict, **fixed: Any):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = (
                _build(hints[f.name], value) if dataclasses.is_dataclass(hints[f.name]) else value
            )
    kwargs.update(fixed)
    if cls is Recipe:
        kwargs["out_dir"] = kwargs.get("out_dir", Recipe.out_dir).replace("{name}", fixed["name"])
    return cls(**kwargs)
