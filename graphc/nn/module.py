"""Modules: objects that own parameters and add their ops to a graph each time they are called.

A module is built once (its parameters are ``gc.parameter`` tensors created with a seeded
initializer) and called on tensors of any graph: ``model(x)`` builds the forward ops in x's
graph, inside a name scope named after the module, so ``gc.viz`` draws every module as a
cluster. The mode (``.train()`` / ``.eval()``) is read at call time: a training step and an
evaluation function are two compiled functions sharing the same parameters.

Three kinds of state live in a module tree:

* *parameters* — trainable float tensors, listed by ``parameters()`` (what an optimizer gets);
* *buffers* — state that is not trained (batch-norm running statistics, dropout random states),
  listed by ``buffers()``;
* both are saved by ``state()`` / ``gc.save`` under their qualified names (``"conv1.weight"``,
  ``"features.0.running_mean"``), exactly PyTorch's ``state_dict`` keys.

A parameter may be *tied*: assigned to two attributes (``dec.weight = enc.weight``), or reached
through a module used in two places. As in PyTorch, ``parameters()`` lists it once (an
optimizer updates it once) while ``state()`` lists it under every key that reaches it;
``ties()`` maps each further key to the first one, ``gc.save`` records that map and
``gc.load`` rebuilds the tie. The tensor's display name is the first key that reached it.

Dtypes: layers take ``dtype=`` (float32, the default, or float64) and ``.to(dtype)`` converts a
whole model. Nodes are immutable, so ``.to`` puts *new* parameters in the modules: call it
before building optimizers and compiled functions, which keep the parameters they were built
with.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping

import numpy as np

from ..errors import GraphError
from ..init import float_dtype
from ..ir.tensor import Tensor, graph_of


def _is_parameter(value) -> bool:
    return isinstance(value, Tensor) and value.op == "parameter"


def _same_values(a, b) -> bool:
    """Equal arrays (NaN equal to NaN): two keys of one tied parameter must agree."""
    a, b = np.asarray(a), np.asarray(b)
    nan = a.dtype.kind in "fc" and b.dtype.kind in "fc"
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=nan))


def _converted(tensor: Tensor, dtype: np.dtype, key: str) -> Tensor:
    """A new parameter of `dtype` holding `tensor`'s value (checked: ShapeError naming `key`
    when a finite value does not fit)."""
    from ..ops.sources import parameter

    with tensor.graph:
        fresh = parameter(tensor.node.attrs["name"], np.zeros(tensor.node.attrs["storage"]
                                                              .value.shape, dtype))
    old = tensor.node.attrs["storage"]
    fresh.node.attrs["storage"].write(old.value, key)
    fresh.node.attrs["storage"].requires_grad = old.requires_grad  # a frozen layer stays so
    return fresh


class Module:
    """Base class of every layer and model. Subclasses set attributes and define ``forward``.

    Assigning a ``gc.parameter`` float tensor to an attribute registers it as trainable;
    assigning a module registers it as a child (its qualified names and name scope follow the
    attribute name). Use ``register_buffer`` for state that must be saved but not trained.
    """

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        # the constructor's arguments: what gc.load needs to rebuild a built-in module
        self.__dict__["_config"] = (args, kwargs)
        return self

    def __init__(self) -> None:
        d = self.__dict__
        d["_modules"] = {}
        d["_params"] = {}
        d["_buffers"] = {}
        d["training"] = True
        d["_prefix"] = ""  # display-name prefix of this module's state ("features.0.")
        d["_scope"] = None  # name scope given by the parent (its attribute name)
        d["_name"] = None  # a name set by the user (the scope of a root module)

    # -- registration ------------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        if "_modules" not in self.__dict__:
            raise GraphError(f"{type(self).__name__}: call super().__init__() before assigning "
                             "attributes of a module")
        if "." in name and (isinstance(value, Module) or _is_parameter(value)):
            # (state keys join names with dots: "a.b" beside a child "a" holding "b" would
            # be one key for two tensors, and a save would keep one of them; PyTorch refuses
            # it too)
            raise GraphError(f"{type(self).__name__}: a submodule, parameter or buffer name "
                             f"cannot contain '.', got {name!r}")
        # a name that changes registry leaves the old one; one that stays keeps its place in
        # the order (as PyTorch: ``seq[2].weight = seq[0].weight`` keeps "2.weight" first)
        if not isinstance(value, Module):
            self._modules.pop(name, None)
        if not (_is_parameter(value) and value.dtype.kind == "f" and name not in self._buffers):
            self._params.pop(name, None)
        if isinstance(value, Module):
            self._modules[name] = value
            value._attach(self._prefix + name + ".", name)
        elif name in self._buffers:
            if not _is_parameter(value):
                raise GraphError(f"buffer {name!r} must stay a gc.parameter tensor")
            self._buffers[name] = value
            self._label(name, value, keep=True)
        elif _is_parameter(value) and value.dtype.kind == "f":
            self._params[name] = value
            self._label(name, value, keep=True)
        elif _is_parameter(value):
            # an int/bool parameter (a random state, a counter) cannot be trained: it is
            # state to save, i.e. a buffer — never silently dropped from state() and files
            self._buffers[name] = value
            self._label(name, value, keep=True)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for registry in (self._modules, self._params, self._buffers):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Tensor) -> Tensor:
        """Keep `tensor` (a parameter) as saved, non-trainable state: running statistics, RNG
        states. Optimizers never see buffers; ``state()`` and ``gc.save`` do."""
        if not _is_parameter(tensor):
            raise GraphError(f"buffer {name!r} must be a gc.parameter tensor")
        if "." in name:
            raise GraphError(f"{type(self).__name__}: a submodule, parameter or buffer name "
                             f"cannot contain '.', got {name!r}")
        self._params.pop(name, None)
        self._buffers[name] = tensor
        # not trained (PyTorch's buffers): an optimizer given it skips it, and gc.onnx.export
        # writes it as frozen, so that a re-import keeps it so
        tensor.node.attrs["storage"].requires_grad = False
        self._label(name, tensor)
        object.__setattr__(self, name, tensor)
        return tensor

    def _label(self, local: str, tensor: Tensor, keep: bool = False) -> None:
        """Give `tensor` this module's qualified name for `local`. With `keep`, a tensor that
        a module already named (a tie: ``dec.weight = enc.weight``) keeps its first name."""
        if keep and tensor.node.label is not None:
            return
        qualified = self._prefix + local
        tensor.node.label = qualified
        tensor.node.attrs["storage"].name = qualified

    def _attach(self, prefix: str, scope: str | None, named: set | None = None) -> None:
        """Called by the parent: take qualified names under `prefix`, and the scope `scope`.
        `named` holds the tensors already named in this pass: a tied tensor is named after
        the first place that reaches it, as ``state()`` lists keys."""
        named = set() if named is None else named
        self.__dict__["_prefix"] = prefix
        self.__dict__["_scope"] = scope
        for local, tensor in list(self._params.items()) + list(self._buffers.items()):
            if tensor.node.uid not in named:
                named.add(tensor.node.uid)
                self._label(local, tensor)
        for local, child in self._modules.items():
            child._attach(prefix + local + ".", child._scope or local, named)

    # -- naming ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The module's name scope: its attribute name inside a parent, else the name set by
        the user, else its class name in lower case."""
        return self._scope or self._name or type(self).__name__.lower()

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str) or not value or "/" in value:
            raise GraphError(f"a module name must be a non-empty str without '/', got {value!r}")
        self.__dict__["_name"] = value
        if self._scope is None:  # a root: its parameters' display names start with its name
            self._attach(value + ".", None)

    def named(self, name: str) -> Module:
        """Set the name (scope and display prefix) and return the module, for chaining."""
        self.name = name
        return self

    # -- calling -----------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        graph = graph_of(*args, *kwargs.values())
        with graph, graph.name_scope(self.name):
            return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        """The computation, on tensors; subclasses define it and users call the module."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # -- traversal ---------------------------------------------------------------------------
    def children(self) -> list[Module]:
        """The direct sub-modules, in registration order."""
        return list(self._modules.values())

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, each once, with its qualified name (depth first,
        in registration order: PyTorch's order)."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self) -> list[Module]:
        """This module and all its descendants, each once."""
        return [m for _, m in self.named_modules()]

    def _every_place(self, prefix: str = "", ancestors: tuple = ()
                     ) -> Iterator[tuple[str, Module]]:
        """Every (qualified name, module), a module used in two places under both names
        (PyTorch's ``state_dict`` walk); a module inside itself is not followed."""
        yield prefix, self
        for k, m in self._modules.items():
            if m is not self and all(m is not a for a in ancestors):
                yield from m._every_place(f"{prefix}.{k}" if prefix else k, ancestors + (self,))

    def _named(self, kind: str, unique: bool = True) -> list[tuple[str, Tensor]]:
        out, seen = [], set()
        places = self.named_modules() if unique else self._every_place()
        for prefix, module in places:
            for local, tensor in getattr(module, kind).items():
                if not unique or tensor.node.uid not in seen:
                    seen.add(tensor.node.uid)
                    out.append((f"{prefix}.{local}" if prefix else local, tensor))
        return out

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        """(qualified name, parameter) for every trainable parameter, each once (a tied one
        under the first key that reaches it)."""
        return self._named("_params")

    def parameters(self) -> list[Tensor]:
        """The trainable parameters (what an optimizer updates), each once, in order."""
        return [t for _, t in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, Tensor]]:
        """(qualified name, buffer) for every buffer, each once."""
        return self._named("_buffers")

    def buffers(self) -> list[Tensor]:
        """Saved but not trained state: batch-norm running statistics, dropout RNG states."""
        return [t for _, t in self.named_buffers()]

    def num_parameters(self) -> int:
        """How many trainable numbers the model has."""
        return int(sum(np.prod(p.shape, dtype=np.int64) for p in self.parameters()))

    # -- modes -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode for this module and its descendants (dropout on, batch statistics).
        A frozen module (``freeze()``) and its descendants stay in evaluation mode."""
        for m in self.modules():
            m.__dict__["training"] = bool(mode) and not m.__dict__.get("_frozen", False)
        return self

    # -- freezing ----------------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Mark every parameter of this module and its descendants trainable or frozen (as
        PyTorch). The flag lives on each parameter's storage, so every optimizer and compiled
        step built afterwards sees it: optimizers skip frozen parameters even when given them
        (no update, no gradient computed). ``parameters()`` and ``state()`` still list them."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def freeze(self) -> Module:
        """Freeze the parameters (``requires_grad_(False)``) and keep this module and its
        descendants in evaluation mode even when a parent is switched to training mode
        (Lightning's meaning: a frozen batch norm uses and keeps its running statistics)."""
        self.requires_grad_(False)
        for m in self.modules():
            m.__dict__["_frozen"] = True
            m.__dict__["training"] = False
        return self

    def unfreeze(self) -> Module:
        """Undo ``freeze()``: trainable parameters, and training mode again (Lightning)."""
        self.requires_grad_(True)
        for m in self.modules():
            m.__dict__["_frozen"] = False
        return self.train()

    @property
    def frozen(self) -> bool:
        """Whether ``freeze()`` holds this module in evaluation mode."""
        return bool(self.__dict__.get("_frozen", False))

    def eval(self) -> Module:
        """Evaluation mode (dropout off, running statistics). Affects later calls only."""
        return self.train(False)

    # -- state -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        """Parameters and buffers by qualified name: what ``state()`` and ``gc.save`` store.
        A tied tensor is listed under every key that reaches it, module by module, each
        module's parameters then its buffers: PyTorch's ``state_dict`` order, so the two zip
        key for key (all parameters came first once)."""
        out: dict[str, Tensor] = {}
        for prefix, module in self._every_place():
            for local, tensor in [*module._params.items(), *module._buffers.items()]:
                out[f"{prefix}.{local}" if prefix else local] = tensor
        return out

    def state(self) -> dict[str, np.ndarray]:
        """A copy of every parameter's and buffer's value, by qualified name (a tied one under
        each of its keys)."""
        return {k: t.value for k, t in self.state_tensors().items()}

    def ties(self) -> dict[str, str]:
        """``{key: first key}`` for every state key whose tensor an earlier key already names
        (``{"2.weight": "0.weight"}`` after ``seq[2].weight = seq[0].weight``); empty when
        nothing is tied. ``gc.save`` stores it, ``gc.load`` rebuilds the ties."""
        first: dict[int, str] = {}
        out = {}
        for key, tensor in self.state_tensors().items():
            canonical = first.setdefault(tensor.node.uid, key)
            if canonical != key:
                out[key] = canonical
        return out

    def _place(self, key: str) -> tuple[Module, str]:
        """The module and attribute name a state key leads to."""
        *path, local = key.split(".")
        module = self
        for part in path:
            if part not in module._modules:
                raise GraphError(f"{type(self).__name__} has no sub-module for the key {key!r}")
            module = module._modules[part]
        if local not in module._params and local not in module._buffers:
            raise GraphError(f"{type(self).__name__} has no parameter or buffer {key!r}")
        return module, local

    def _tie(self, key: str, to: str) -> None:
        """Make `key` name the very tensor `to` names (used by ``gc.load`` to rebuild a tie)."""
        module, local = self._place(to)
        tensor = getattr(module, local)
        target, name = self._place(key)
        old = getattr(target, name)
        if tuple(old.shape) != tuple(tensor.shape) or old.dtype != tensor.dtype:
            raise GraphError(f"cannot tie {key!r} ({tuple(old.shape)} {old.dtype}) to {to!r} "
                             f"({tuple(tensor.shape)} {tensor.dtype})")
        setattr(target, name, tensor)

    def load_state(self, state: Mapping[str, np.ndarray], strict: bool = True) -> Module:
        """Set parameters and buffers from `state` (as returned by ``state()``).

        Every value is checked first (shape, kind of number, and no finite value made
        non-finite by the conversion to the parameter's dtype: ``gc.ShapeError`` naming the
        key; a float64 -> float32 rounding is allowed) and only then written, so a failed load
        changes nothing. A tied tensor may be given under any of its keys; under several, the
        values must be equal. With ``strict`` every key must match both ways (a tied tensor
        given under one of its keys counts as given); otherwise missing and extra keys are
        ignored (values must still fit).
        """
        targets = self.state_tensors()
        keys_of: dict[int, list[str]] = {}
        for key, tensor in targets.items():
            keys_of.setdefault(tensor.node.uid, []).append(key)
        missing = sorted(k for keys in keys_of.values() if not any(k2 in state for k2 in keys)
                         for k in keys)
        extra = sorted(set(state) - set(targets))
        if strict and (missing or extra):
            raise GraphError(f"{type(self).__name__}.load_state: missing keys {missing}, "
                             f"unexpected keys {extra}")
        checked: dict[int, tuple] = {}
        for key, tensor in targets.items():
            if key not in state:
                continue
            storage = tensor.node.attrs["storage"]
            value = storage.checked(state[key], key)
            first = checked.get(tensor.node.uid)
            if first is None:
                checked[tensor.node.uid] = (storage, value, key, state[key])
            elif not _same_values(first[3], state[key]):
                raise GraphError(f"{type(self).__name__}.load_state: {first[2]!r} and {key!r} "
                                 f"name one tied parameter, but the state gives them different "
                                 f"values")
        for storage, value, key, _ in checked.values():  # everything checked: now write
            storage.write(value, key)
        return self

    # -- dtypes ------------------------------------------------------------------------------
    def to(self, dtype) -> Module:
        """Convert every float parameter and buffer to `dtype` (float32 or float64); integer
        state (counters, random states) is left alone. Returns the module, as PyTorch.

        Nodes are immutable, so each converted tensor is a *new* parameter put in place of the
        old one (ties are kept): call ``.to`` before building optimizers and compiling
        functions, which keep using the parameters they were built with. Every value is
        converted with the checks of ``load_state`` (a finite value that would become
        non-finite, 1e300 into float32, is a ``gc.ShapeError`` naming its key) before any
        module changes.
        """
        dt = float_dtype(dtype, f"{type(self).__name__}.to(dtype)")
        new: dict[int, Tensor] = {}
        plan = []
        for prefix, module in self._every_place():
            for registry in (module._params, module._buffers):
                for local, tensor in registry.items():
                    if tensor.dtype.kind != "f" or tensor.dtype == dt:
                        continue
                    uid = tensor.node.uid
                    if uid not in new:
                        new[uid] = _converted(tensor, dt, f"{prefix}.{local}" if prefix else local)
                    plan.append((module, local, new[uid]))
        for module, local, tensor in plan:  # everything converted: now swap
            setattr(module, local, tensor)
        for module in self.modules():  # so that gc.load rebuilds the model in this dtype
            if "dtype" in inspect.signature(type(module).__init__).parameters:
                module._config[1]["dtype"] = dt.name
        return self

    # -- printing ----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The constructor arguments shown by repr(); layers override it."""
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [head]
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied one after the other. Children are named "0", "1", ... (PyTorch's state
    keys) and drawn as scopes ``linear_0``, ``relu_1``, ..."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        named: set = set()  # one naming pass: a tensor tied across children keeps the first name
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise GraphError(f"Sequential takes modules, got {type(m).__name__} at {i}")
            self._modules[str(i)] = m
            m._attach(self._prefix + f"{i}.", f"{type(m).__name__.lower()}_{i}", named)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int | slice) -> Module:
        """The i-th module, or a Sequential of a slice of them: the same modules, under the
        keys "0", "1", ... that a Sequential built from them has, so it saves and loads as one
        (PyTorch's slice keeps the original keys, "3.weight" where this one says
        "1.weight"); the parameters keep their display names (a slice renames nothing)."""
        if isinstance(i, slice):
            modules = tuple(self._modules.values())[i]
            part = Sequential()
            part.__dict__["_config"] = (modules, {})  # what gc.save records to rebuild it
            for key, module in enumerate(modules):
                part._modules[str(key)] = module
            return part
        return list(self._modules.values())[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))
