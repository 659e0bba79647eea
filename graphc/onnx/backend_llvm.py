"""``graphc.onnx.backend_llvm``: ONNX's ``Backend`` interface on graphc's native LLVM backend
(see ``graphc.onnx.backend``)."""

from __future__ import annotations

from .backend import GraphcBackend


class GraphcLLVMBackend(GraphcBackend):
    backend_name = "llvm"


prepare = GraphcLLVMBackend.prepare
run_model = GraphcLLVMBackend.run_model
run_node = GraphcLLVMBackend.run_node
supports_device = GraphcLLVMBackend.supports_device
