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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from ..errors import GraphError, ShapeError
from ..ir.tensor import Tensor, graph_of


def _is_parameter(value) -> bool:
    return isinstance(value, Tensor) and value.op == "parameter"


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
        for registry in (self._modules, self._params):
            registry.pop(name, None)
        if isinstance(value, Module):
            self._modules[name] = value
            value._attach(self._prefix + name + ".", name)
        elif name in self._buffers:
            if not _is_parameter(value):
                raise GraphError(f"buffer {name!r} must stay a gc.parameter tensor")
            self._buffers[name] = value
            self._label(name, value)
        elif _is_parameter(value) and value.dtype.kind == "f":
            self._params[name] = value
            self._label(name, value)
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
        self._params.pop(name, None)
        self._buffers[name] = tensor
        self._label(name, tensor)
        object.__setattr__(self, name, tensor)
        return tensor

    def _label(self, local: str, tensor: Tensor) -> None:
        qualified = self._prefix + local
        tensor.node.label = qualified
        tensor.node.attrs["storage"].name = qualified

    def _attach(self, prefix: str, scope: str) -> None:
        """Called by the parent: take qualified names under `prefix`, and the scope `scope`."""
        self.__dict__["_prefix"] = prefix
        self.__dict__["_scope"] = scope
        for local, tensor in list(self._params.items()) + list(self._buffers.items()):
            self._label(local, tensor)
        for local, child in self._modules.items():
            child._attach(prefix + local + ".", child._scope or local)

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

    def _named(self, kind: str) -> list[tuple[str, Tensor]]:
        out, seen = [], set()
        for prefix, module in self.named_modules():
            for local, tensor in getattr(module, kind).items():
                if tensor.node.uid not in seen:
                    seen.add(tensor.node.uid)
                    out.append((f"{prefix}.{local}" if prefix else local, tensor))
        return out

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        """(qualified name, parameter) for every trainable parameter, each once."""
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
        """Training mode for this module and its descendants (dropout on, batch statistics)."""
        for m in self.modules():
            m.__dict__["training"] = bool(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (dropout off, running statistics). Affects later calls only."""
        return self.train(False)

    # -- state -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        """Parameters and buffers by qualified name: what ``state()`` and ``gc.save`` store."""
        return dict(self.named_parameters() + self.named_buffers())

    def state(self) -> dict[str, np.ndarray]:
        """A copy of every parameter's and buffer's value, by qualified name."""
        return {k: t.value for k, t in self.state_tensors().items()}

    def load_state(self, state: Mapping[str, np.ndarray], strict: bool = True) -> Module:
        """Set parameters and buffers from `state` (as returned by ``state()``).

        All values are checked first and only then written, so a mismatch changes nothing.
        With ``strict`` every key must match both ways; otherwise missing and extra keys are
        ignored (shapes must still agree).
        """
        targets = self.state_tensors()
        missing = sorted(set(targets) - set(state))
        extra = sorted(set(state) - set(targets))
        if strict and (missing or extra):
            raise GraphError(f"{type(self).__name__}.load_state: missing keys {missing}, "
                             f"unexpected keys {extra}")
        pairs = []
        for key, tensor in targets.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            if value.shape != tuple(tensor.shape):
                raise ShapeError(f"{key}: the module has shape {tuple(tensor.shape)}, the state "
                                 f"has {value.shape}")
            if value.dtype.kind != tensor.dtype.kind:
                raise GraphError(f"{key}: the module holds {tensor.dtype}, the state "
                                 f"{value.dtype}")
            pairs.append((tensor, value))
        for tensor, value in pairs:
            tensor.value = value
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
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise GraphError(f"Sequential takes modules, got {type(m).__name__} at {i}")
            self._modules[str(i)] = m
            m._attach(self._prefix + f"{i}.", f"{type(m).__name__.lower()}_{i}")

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))
