"""What the native targets share (installed as graphc.backends.kernelgen).

The host target (backends/llvm) and the GPU target (backends/cuda) are siblings: both import
from here, neither from the other.

* program.py: the slot layout, the kernel context a lowering builds with, the program
  generator (slots, names, the error record, interning of identical functions);
* loops.py: a scan's control (loop slots, init, per-step slices, ys and carry copies) that
  the host emits inside one kernel and the GPU splits into control launches;
* registry.py: the one lowering registry, keyed by op, with per-target overrides;
* irutil.py: llvmlite helpers (types, constants, counted loops);
* emitter.py: sympy -> IR for elementwise expressions; elementwise.py: the element of an
  elementwise op or fused group; mathlib.py: the host's vectorizable exp/log/tanh...;
* reductions.py: identities and combiners; philox.py: the random numbers;
* binding.py: the host side of a step (buffers of a binding, the message of a failure);
* toolchain.py: the host JIT (MCJIT) and its on-disk object cache (the llvm backend and the
  CUDA emulation both compile for the host).
"""
