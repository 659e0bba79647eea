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

_SCALARS = (bool, int, float, str, type(None))


def _classes() -> dict[str, type]:
    from .. import nn

    return {name: getattr(nn, name) for name in nn.__all__
            if inspect.isclass(getattr(nn, name)) and name != "Module"}


def _encode_arg(value):
    from ..nn.module import Module

    if isinstance(value, Module):
        return {"module": module_spec(value)}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (tuple, list)):
        return {"tuple": [_encode_arg(v) for v in value]}
    raise GraphError(f"constructor argument {value!r} cannot be written to a file")


def module_spec(module) -> dict:
    """{"class", "args", "kwargs", "training"} of a module built from gc.nn classes only.

    Raises GraphError naming the first class that cannot be rebuilt from a file. Random
    generators passed as ``rng`` are dropped: the saved state replaces the initial values.
    """
    cls = type(module)
    if _classes().get(cls.__name__) is not cls:
        raise GraphError(f"{cls.__name__} is not a gc.nn class")
    args, kwargs = module._config
    kwargs = {k: v for k, v in kwargs.items() if k != "rng"}
    if cls.__name__ != "Sequential":
        names = list(inspect.signature(cls.__init__).parameters)[1:]
        args = tuple(a for name, a in zip(names, args) if name != "rng")
    return {"class": cls.__name__, "args": [_encode_arg(a) for a in args],
            "kwargs": {k: _encode_arg(v) for k, v in kwargs.items()},
            "training": module.training, "name": module._name}


def _decode_arg(value):
    if isinstance(value, dict):
        if set(value) == {"module"}:
            return build_module(value["module"])
        if set(value) == {"tuple"} and isinstance(value["tuple"], list):
            return tuple(_decode_arg(v) for v in value["tuple"])
        raise GraphError(f"bad constructor argument {value!r}")
    if not isinstance(value, _SCALARS):
        raise GraphError(f"bad constructor argument {value!r}")
    return value


def build_module(spec: dict):
    """Instantiate the gc.nn class a spec names, with its arguments (a fresh initial state)."""
    classes = _classes()
    name = spec.get("class") if isinstance(spec, dict) else spec
    if name not in classes:
        raise GraphError(f"not a gc.nn module class: {name!r}")
    args = spec.get("args", [])
    kwargs = spec.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise GraphError("bad module spec")
    module = classes[spec["class"]](*[_decode_arg(a) for a in args],
                                     **{str(k): _decode_arg(v) for k, v in kwargs.items()})
    if spec.get("name"):
        module.name = str(spec["name"])
    return module.train(bool(spec.get("training", True)))
