"""Recurrent training-step benchmark (issue 15): a single-layer LSTM classifier on graphc's
llvm and numpy backends against PyTorch eager (``nn.LSTM`` + ``nn.Linear``) and JAX
(``lax.scan``, the input projection hoisted out of the loop; only when installed).

The workload: T=32 steps, batch 32, 32 input features, hidden 128; the class (of 10) is read
from the last hidden state (a linear layer, softmax cross-entropy); one step is forward,
backward and a plain SGD update, float32. Every framework starts from the same weights (the
PyTorch model's, copied) and gets the same batch; their first losses are printed side by side
as a sanity check. Steps are timed round-robin in one process (a window each, several rounds:
a noisy moment of a shared machine hits every framework alike), median ms per step. Also
printed: graphc's cold compile time (the machine-code cache off, best of 3), the cached one
(a second compile of the same step in the same process: the compile memo reuses the optimized
program and its IR, and the machine code is loaded from the on-disk cache), the pass
statistics of the compiled step and, with
``--profile``, where the llvm step's cycles go (loop body kernels one by one).

    python bench/lstm.py [--quick] [--threads 2] [--graph auto|layer|scan] [--profile]

``--graph layer`` builds graphc's model with ``gc.nn.LSTM`` (a ``gc.scan`` inside), ``scan``
with an explicit ``gc.scan`` over the same cell (the same weights and gate order), ``auto``
the layer when it loops with scan (the default), else the explicit scan.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

T, N, D, H, CLASSES = 32, 32, 32, 128, 10


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter timing windows")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--graph", choices=("auto", "layer", "scan"), default="auto",
                   help="gc.nn.LSTM, an explicit gc.scan, or the layer when it is on scan")
    p.add_argument("--profile", action="store_true",
                   help="also print the llvm step's cycles per kernel")
    return p.parse_args(argv)


def training_flops() -> int:
    """Floating-point operations of one training step as usually counted: the forward
    products (input and recurrent projection, the classifier) and twice that for the
    backward pass (the gradient to the inputs and to the weights). graphc's reverse loop
    also recomputes each step's gates, which this count leaves out."""
    forward = 2 * T * N * (D + H) * 4 * H + 2 * N * H * CLASSES
    return 3 * forward


def torch_model(seed: int = 0):
    """The PyTorch model, whose initial weights every framework starts from."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.LSTM(D, H), torch.nn.Linear(H, CLASSES)


def weights(lstm, head) -> dict:
    """The PyTorch weights as NumPy arrays in graphc's layout ((in, out): x @ W)."""
    return {"weight_ih_l0": lstm.weight_ih_l0.detach().numpy().T.copy(),
            "weight_hh_l0": lstm.weight_hh_l0.detach().numpy().T.copy(),
            "bias_ih_l0": lstm.bias_ih_l0.detach().numpy().copy(),
            "bias_hh_l0": lstm.bias_hh_l0.detach().numpy().copy(),
            "head.weight": head.weight.detach().numpy().T.copy(),
            "head.bias": head.bias.detach().numpy().copy()}


def layer_is_on_scan() -> bool:
    """Does ``gc.nn.LSTM`` loop with ``gc.scan`` (its ``unroll`` option exists, off by
    default)? Before that, it unrolls over T."""
    import graphc as gc

    option = inspect.signature(gc.nn.LSTM.__init__).parameters.get("unroll")
    return option is not None and option.default is False


def build_graphc(w: dict, use_layer: bool, lr: float):
    """(inputs, loss, updates) of the training step in the current graph."""
    import graphc as gc
    from bench.workloads import sgd

    F = gc.nn.functional
    x = gc.placeholder("x", (T, N, D), "float32")
    y = gc.placeholder("y", (N,), "int64")
    head = gc.nn.Linear(H, CLASSES)
    head.weight.value, head.bias.value = w["head.weight"], w["head.bias"]
    if use_layer:
        lstm = gc.nn.LSTM(D, H)
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(lstm, name).value = w[name]
        _, (h_n, _) = lstm(x)
        last = h_n[0]
        params = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    else:
        params = [gc.parameter(name, w[name]) for name in
                  ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
        w_ih, w_hh, b_ih, b_hh = params

        def cell(carry, x_t):
            h, c = carry
            z = (x_t @ w_ih + b_ih) + (h @ w_hh + b_hh)
            i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
            c = gc.sigmoid(f) * c + gc.sigmoid(i) * gc.tanh(g)
            return (gc.sigmoid(o) * gc.tanh(c), c), None

        zeros = gc.zeros((N, H), "float32")
        (last, _), _ = gc.scan(cell, (zeros, zeros), x)
    loss = F.cross_entropy(head(last), y)
    return [x, y], loss, sgd(loss, params + [head.weight, head.bias], lr)


def make_torch(lstm, head, lr: float, threads: int):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    opt = torch.optim.SGD([*lstm.parameters(), *head.parameters()], lr=lr)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        _, (h_n, _) = lstm(torch.from_numpy(x))
        loss = F.cross_entropy(head(h_n[0]), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return loss.item()

    return step


def make_jax(w: dict, lr: float):
    """JAX jit: ``lax.scan`` over the recurrent part, the input projection of all T steps one
    product before the loop (what cuDNN and PyTorch's CPU LSTM do)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def loss_fn(ps, x, y):
        w_ih, w_hh, b_ih, b_hh, wo, bo = ps
        xw = x @ w_ih + (b_ih + b_hh)  # (T, N, 4H): hoisted

        def cell(carry, xw_t):
            h, c = carry
            z = xw_t + h @ w_hh
            i, f, g, o = jnp.split(z, 4, axis=1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((x.shape[1], H), x.dtype)
        (h, _), _ = lax.scan(cell, (zeros, zeros), xw)
        logp = jax.nn.log_softmax(h @ wo + bo, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def update(ps, x, y):
        value, grads = jax.value_and_grad(loss_fn)(ps, x, y)
        return [p - lr * g for p, g in zip(ps, grads)], value

    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "head.weight",
             "head.bias")
    state = [[jnp.asarray(w[k]) for k in names]]

    def step(x, y):
        state[0], value = update(state[0], x, y)
        return float(value)  # waits for the result: honest timing

    return step


def main(argv=None) -> int:
    args = _parse(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.timing import threads_before_loading, threads_now, timing_note

    threads_before_loading(args.threads)
    import datetime
    import platform

    # isort: off
    import graphc as gc  # before NumPy: graphc's BLAS policy must reach OpenBLAS's start
    import numpy as np
    # isort: on
    from bench import frameworks
    from bench.timing import blas_settings, round_robin
    from graphc.passes import format_stats
    from graphc.sysinfo import report

    threads_now(args.threads)
    window = 0.15 if args.quick else 0.4
    repeats = 5 if args.quick else 9
    lr = frameworks.LR
    found = frameworks.available()
    if not found["torch"]:
        print("PyTorch is not installed: it provides the initial weights and the reference "
              "(pip install torch)")
        return 1
    machine = dict(report()[0][1] + report()[2][1])
    use_layer = args.graph == "layer" or (args.graph == "auto" and layer_is_on_scan())
    print(f"graphc {gc.__version__} LSTM benchmark, {datetime.date.today()}, "
          f"{machine.get('host CPU')}, {machine.get('cpus')} cpus, {args.threads} threads, "
          f"numpy {np.__version__}, {platform.python_version()}")
    print("BLAS:", blas_settings())
    print(f"LSTM T={T} N={N} D={D} H={H}, {CLASSES} classes from the last state, "
          f"forward + backward + SGD, float32; graphc model: "
          f"{'gc.nn.LSTM' if use_layer else 'explicit gc.scan'}"
          f"{'' if layer_is_on_scan() or not use_layer else ' (unrolled: not on scan yet)'}")
    print("comparisons:", ", ".join(f"{k} {'found' if v else 'not installed'}"
                                    for k, v in found.items()))
    print(timing_note(window, repeats))

    lstm, head = torch_model()
    w = weights(lstm, head)
    rng = np.random.default_rng(0)
    batch = [rng.normal(size=(T, N, D)).astype(np.float32),
             rng.integers(0, CLASSES, N).astype(np.int64)]

    results, steps, functions = {}, {}, {}
    for backend in ("llvm", "numpy"):
        with gc.Graph(f"lstm_{backend}"):
            inputs, loss, updates = build_graphc(w, use_layer, lr)
            initial = {p: p.value for p in updates}
            cold, cached, cpu = None, None, {}
            if backend == "llvm":
                from graphc import compile_memo

                for _ in range(3):  # cold: no machine-code cache, no compile memo
                    compile_memo.clear()
                    start, cpu_start = time.perf_counter(), time.process_time()
                    fn = gc.compile(inputs, loss, updates=updates, backend="llvm",
                                    backend_options={"cache": False})
                    seconds = time.perf_counter() - start
                    if cold is None or seconds < cold:
                        cold, cpu["cold"] = seconds, time.process_time() - cpu_start
                gc.compile(inputs, loss, updates=updates, backend="llvm")  # fill the cache
                start, cpu_start = time.perf_counter(), time.process_time()
                fn = gc.compile(inputs, loss, updates=updates, backend="llvm")
                cached = time.perf_counter() - start
                cpu["cached"] = time.process_time() - cpu_start
                if args.profile:
                    profiled = gc.compile(inputs, loss, updates=updates, backend="llvm",
                                          backend_options={"profile": True})
            else:
                start = time.perf_counter()
                fn = gc.compile(inputs, loss, updates=updates, backend="numpy")
                cold = time.perf_counter() - start
            for p, v in initial.items():
                p.value = v
        functions[backend] = fn
        label = f"graphc {backend}"
        steps[label] = fn
        results[label] = dict(first=float(fn(*batch)), compile=cold, cached=cached,
                              cpu=cpu)
        for p, v in initial.items():  # (the timed steps start from the same weights)
            p.value = v
    torch_step = make_torch(lstm, head, lr, args.threads)
    steps["PyTorch eager"] = torch_step
    results["PyTorch eager"] = dict(first=torch_step(*batch))
    if found["jax"]:
        jax_step = make_jax(w, lr)
        start = time.perf_counter()
        first = jax_step(*batch)
        steps["JAX jit"] = jax_step
        results["JAX jit"] = dict(first=first, compile=time.perf_counter() - start)

    print("\nfirst losses (same weights, same batch): " + ", ".join(
        f"{label} {r['first']:.6f}" for label, r in results.items()))
    reference = results["PyTorch eager"]["first"]
    for label, r in results.items():
        if abs(r["first"] - reference) > 1e-4 * max(1.0, abs(reference)):
            print(f"  WARNING {label}: first loss {r['first']:.6f} differs from PyTorch's "
                  f"{reference:.6f}")
    if not found["jax"]:
        print("JAX jit: not installed")

    for label, ms in round_robin(steps, batch, window, repeats).items():
        results[label]["ms"] = ms
    _print_table(results)

    fn, cpu = functions["llvm"], results["graphc llvm"]["cpu"]
    print(f"\ngraphc llvm compile, CPU time of this process (what a loaded machine's wall "
          f"clock inflates): cold {cpu['cold']:.2f} s, cached {cpu['cached']:.2f} s (the "
          f"cached one: compile memo hit {fn.stats.get('compile_memo_hit')}, machine-code "
          f"cache hit {fn.stats['llvm_cache_hit']}, loading the code "
          f"{fn.stats['llvm_compile_seconds']:.2f} s wall)")
    print("\npass statistics of the compiled step (llvm):")
    print(format_stats(fn.stats["passes"]))
    loops = [n for n in fn.graph.nodes if n.op.name == "scan"]
    print(f"{fn.stats['nodes']} nodes, {len(loops)} loops: " + "; ".join(
        f"{'reverse' if n.attrs['reverse'] else 'forward'} body {len(n.attrs['body'].nodes)} "
        f"nodes" for n in loops) + f"; IR {len(fn.source)} characters")
    if args.profile:
        _print_profile(profiled, batch)
    return 0


def _print_table(results: dict) -> None:
    flops = training_flops()
    torch_ms = results["PyTorch eager"]["ms"]
    print(f"\n  {'framework':<16} {'ms/step':>9} {'GFLOP/s':>8} {'vs torch':>9} "
          f"{'cold compile s':>15} {'cached s':>9}")
    for label, r in results.items():
        cold = "" if r.get("compile") is None else f"{r['compile']:.2f}"
        cached = "" if r.get("cached") is None else f"{r['cached']:.2f}"
        print(f"  {label:<16} {r['ms']:>9.2f} {flops / r['ms'] / 1e6:>8.1f} "
              f"{torch_ms / r['ms']:>8.2f}x {cold:>15} {cached:>9}")
    print("\n| framework | ms/step | GFLOP/s | vs PyTorch | cold compile | cached compile |")
    print("|---|---:|---:|---:|---:|---:|")
    for label in ("graphc llvm", "graphc numpy", "PyTorch eager", "JAX jit"):
        r = results.get(label)
        if r is None:
            print(f"| {label} | not installed | | | | |")
            continue
        cold = "—" if r.get("compile") is None else f"{r['compile']:.2f} s"
        cached = "—" if r.get("cached") is None else f"{r['cached']:.2f} s"
        print(f"| {label} | {r['ms']:.2f} | {flops / r['ms'] / 1e6:.1f} | "
              f"{torch_ms / r['ms']:.2f}x | {cold} | {cached} |")


def _print_profile(fn, batch, steps: int = 20) -> None:
    """Cycles per kernel of the llvm step (a loop's body kernels listed under it)."""
    for _ in range(steps):
        fn(*batch)
    profile = fn.kernel_profile()
    total = sum(c for _, c in profile) or 1
    print(f"\nllvm step, cycles per kernel (mean of {steps} steps, top 20 of {len(profile)}):")
    for name, cycles in profile[:20]:
        print(f"  {name:<32} {cycles / steps / 1e6:8.3f} Mcycles {cycles / total:6.1%}")


if __name__ == "__main__":
    sys.exit(main())
