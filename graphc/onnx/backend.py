"""``graphc.onnx.backend``: ONNX's ``Backend`` interface on graphc's NumPy backend.

``onnx.backend.test.BackendTest(graphc.onnx.backend, __name__)`` runs ONNX's node cases
through it: ``prepare`` imports the model into a fresh graph (placeholders of the inputs'
exact shapes and dtypes) and compiles it; the returned rep runs it on NumPy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx.backend.base

from .. import ops
from ..function import compile as gc_compile
from ..ir.graph import Graph
from ..ir.tensor import Tensor
from .errors import StaticValueNeeded, UnsupportedError
from .importer import OnnxModel


class _Compiled:
    def __init__(self, model: OnnxModel, backend: str, known: dict[str, np.ndarray]) -> None:
        self.graph = Graph(f"onnx_{model.proto.graph.name or 'model'}")
        with self.graph:
            self.inputs = [ops.placeholder(name, shape, dtype)
                           for name, shape, dtype in model.input_types() if name not in known]
            by_name = {p.name: p for p in self.inputs}
            outs = model(**by_name, **known)
        self.outputs = [outs] if isinstance(outs, Tensor) else list(outs)
        self.fn = gc_compile(self.inputs, self.outputs, backend=backend)
        self.names = [p.name for p in self.inputs]

    def run(self, arrays: dict[str, np.ndarray]) -> tuple:
        result = list(self.fn(*[arrays[n] for n in self.names]))  # a list: compiled with one
        return tuple(np.asarray(r, dtype=o.dtype) for r, o in zip(result, self.outputs))


class GraphcRep(onnx.backend.base.BackendRep):
    """An imported, compiled ONNX model: ``run(inputs)`` returns its outputs as a tuple.

    A model whose shape arguments (Reshape's target, axes, Slice's bounds, OneHot's depth)
    are model inputs rather than constants cannot be one static graph; such a model is
    compiled at ``run``, specialized on the values of its integer and boolean inputs, and if
    that is not enough also of its scalar inputs (one compilation per distinct value). An
    input with a size-0 dim holds no data: it is always given as its (empty) array, so ops
    that read only its type (CastLike's ``target_type``) work; graphc has no empty tensors.
    """

    def __init__(self, model: OnnxModel, backend: str) -> None:
        self.model = model
        self.backend = backend
        self.names = model.input_names
        types = model.input_types()
        empty = {n for n, shape, _ in types if any(d == 0 for d in shape)}
        ints = empty | {n for n, _, dt in types if dt.kind in "iub"}
        scalars = ints | {n for n, shape, _ in types if not shape}
        self._levels = [sorted(level) for i, level in enumerate([empty, ints, scalars])
                        if i == 0 or level != [empty, ints, scalars][i - 1]]
        self._cache: dict[tuple, _Compiled] = {}
        self.specialize: list[str] | None = None  # chosen at the first run
        if not empty:
            try:
                self._cache[()] = _Compiled(model, backend, {})
                self.specialize = []
            except StaticValueNeeded:
                self._levels = self._levels[1:]  # the first level, none known, was tried
                if not self._levels:
                    raise  # no input could be known: the model needs a computed shape

    def _compile(self, arrays: dict[str, np.ndarray]) -> _Compiled:
        if self.specialize is None:
            error: Exception | None = None
            for names in self._levels:
                try:
                    compiled = self._specialized(arrays, names)
                except StaticValueNeeded as exc:
                    error = exc
                    continue
                self.specialize = names
                return compiled
            raise error
        return self._specialized(arrays, self.specialize)

    def _specialized(self, arrays: dict[str, np.ndarray], names: list[str]) -> _Compiled:
        known = {n: arrays[n] for n in names}
        key = tuple((n, a.dtype.str, a.shape, a.tobytes()) for n, a in known.items())
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = _Compiled(self.model, self.backend, known)
            self._cache[key] = compiled
        return compiled

    def run(self, inputs: Any, **kwargs: Any) -> tuple:
        if isinstance(inputs, dict):
            missing = [n for n in self.names if n not in inputs]
            if missing:
                raise UnsupportedError(f"missing model inputs: {', '.join(missing)} (the model's "
                                       f"inputs: {', '.join(self.names)})")
            arrays = {n: np.asarray(inputs[n]) for n in self.names}
        else:
            inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            if len(inputs) != len(self.names):
                raise UnsupportedError(f"the model has {len(self.names)} inputs "
                                       f"({', '.join(self.names)}), got {len(inputs)} arrays")
            arrays = {n: np.asarray(a) for n, a in zip(self.names, inputs)}
        return self._compile(arrays).run(arrays)


class GraphcBackend(onnx.backend.base.Backend):
    """ONNX backend running models through graphc (the backend named by ``backend_name``)."""

    backend_name = "numpy"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> GraphcRep:
        super().prepare(model, device, **kwargs)
        return GraphcRep(OnnxModel(model), cls.backend_name)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """Run one node: it is wrapped in a model whose inputs have the given arrays' types."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        arrays = [np.asarray(a) for a in inputs]
        names = [n for n in node.input if n]
        graph_inputs = [onnx.helper.make_tensor_value_info(
            n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in zip(names, arrays)]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n]
        graph = onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        rep = GraphcRep(OnnxModel(model), cls.backend_name)
        return rep.run(arrays)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


prepare = GraphcBackend.prepare
run_model = GraphcBackend.run_model
run_node = GraphcBackend.run_node
supports_device = GraphcBackend.supports_device
