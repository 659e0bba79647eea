"""Modules in files: their state by qualified name, and — for models made of gc.nn's own
classes — a spec (class names and constructor arguments) from which ``gc.load`` rebuilds them.

Only classes of ``gc.nn`` are ever instantiated from a file, looked up by name in that
package's public list; a model defined in user code is loaded into an existing instance
(``gc.load(path, into=model)``), since rebuilding it would mean running code named by the file.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import GraphError
from .expressions import short

_SCALARS = (bool, int, float, str, type(None))


MAX_SPEC_DEPTH = 32  # modules inside modules (and tuples inside arguments) in a spec
MAX_SPEC_MODULES = 100_000  # modules in a spec (the largest nets have a few thousand)
_SPEC_FIELDS = {"class", "args", "kwargs", "training", "name"}


def _classes() -> dict[str, type]:
    from .. import nn
    from ..nn.module import Module

    return {name: getattr(nn, name) for name in nn.__all__
            if inspect.isclass(getattr(nn, name)) and issubclass(getattr(nn, name), Module)
            and name != "Module"}


def _encode_arg(value, depth: int):
    from ..nn.module import Module

    if depth >= MAX_SPEC_DEPTH:
        raise GraphError(f"modules or arguments nested more than {MAX_SPEC_DEPTH} deep")
    if isinstance(value, Module):
        return {"module": _spec(value, depth + 1)}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (tuple, list)):
        return {"tuple": [_encode_arg(v, depth + 1) for v in value]}
    raise GraphError(f"constructor argument {short(value)} cannot be written to a file")


def module_spec(module) -> dict:
    """{"class", "args", "kwargs", "training"} of a module built from gc.nn classes only.

    Raises GraphError naming the first class that cannot be rebuilt from a file. Random
    generators passed as ``rng`` are dropped: the saved state replaces the initial values.
    """
    return _spec(module, 0)


def _spec(module, depth: int) -> dict:
    cls = type(module)
    if _classes().get(cls.__name__) is not cls:
        raise GraphError(f"{cls.__name__} is not a gc.nn class")
    args, kwargs = module._config
    kwargs = {k: v for k, v in kwargs.items() if k != "rng"}
    if cls.__name__ != "Sequential":
        names = list(inspect.signature(cls.__init__).parameters)[1:]
        args = tuple(a for name, a in zip(names, args) if name != "rng")
    return {"class": cls.__name__, "args": [_encode_arg(a, depth) for a in args],
            "kwargs": {k: _encode_arg(v, depth) for k, v in kwargs.items()},
            "training": module.training, "name": module._name}


def _decode_arg(value, depth: int, built: list[int]):
    if isinstance(value, dict):
        if set(value) == {"module"}:
            return _build(value["module"], depth + 1, built)
        if set(value) == {"tuple"} and isinstance(value["tuple"], list):
            if depth >= MAX_SPEC_DEPTH:
                raise GraphError(f"constructor arguments nested more than {MAX_SPEC_DEPTH} deep")
            return tuple(_decode_arg(v, depth + 1, built) for v in value["tuple"])
        raise GraphError(f"bad constructor argument {short(value)}")
    if not isinstance(value, _SCALARS):
        raise GraphError(f"bad constructor argument {short(value)}")
    return value


def build_module(spec: dict):
    """Instantiate the gc.nn class a spec names, with its arguments (a fresh initial state).
    Only gc.nn's own Module classes are ever instantiated; every field is type-checked, and
    at most MAX_SPEC_MODULES are built (a 300 kB file listing a million ReLUs took 37 s and
    1.6 GB)."""
    return _build(spec, 0, [0])


def _build(spec, depth: int, built: list[int]):
    if depth >= MAX_SPEC_DEPTH:
        raise GraphError(f"modules nested more than {MAX_SPEC_DEPTH} deep")
    built[0] += 1
    if built[0] > MAX_SPEC_MODULES:
        raise GraphError(f"a module spec of more than {MAX_SPEC_MODULES:,} modules")
    if not isinstance(spec, dict):
        raise GraphError(f"a module spec must be an object, not {type(spec).__name__}")
    if set(spec) != _SPEC_FIELDS:
        raise GraphError(f"a module spec has the fields {sorted(_SPEC_FIELDS)}, not "
                         f"{short(sorted(spec))}")
    classes = _classes()
    name = spec["class"]
    if not isinstance(name, str) or name not in classes:
        raise GraphError(f"not a gc.nn module class: {short(name)}")
    args, kwargs, training, label = spec["args"], spec["kwargs"], spec["training"], spec["name"]
    if not isinstance(args, list) or not isinstance(kwargs, dict) \
            or not isinstance(training, bool) or not isinstance(label, (str, type(None))):
        raise GraphError(f"bad module spec for {name}")
    module = classes[name](*[_decode_arg(a, depth, built) for a in args],
                           **{k: _decode_arg(v, depth, built) for k, v in kwargs.items()})
    if label:
        module.name = label
    return module.train(training)
