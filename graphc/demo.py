"""`graphc demo`: train a LeNet-style CNN on the digits data through one compiled training step,
with a progress bar; report the test accuracy; draw the training step and the loss curves.

Everything a user would write is here, in the open: the model (gc.nn), the optimizer as an
update graph (gc.optim), gc.train.supervised to compile the step and the evaluation function,
gc.train.fit to train, gc.viz / gc.plot / gc.save for the files in --out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

DEFAULT_EPOCHS = 12


def lenet():
    """conv(1->16)-BN-ReLU-pool, conv(16->32)-BN-ReLU-pool, 128-64-10 with dropout."""
    from . import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10),
    ).named("lenet")


def main(args) -> int:
    """Run the demo with the `graphc demo` options (backend, epochs, out); 0 on success."""
    import sys

    from threadpoolctl import threadpool_limits

    import graphc as gc
    from graphc.backends import get_backend

    started = time.perf_counter()
    backend = args.backend or "numpy"
    try:
        get_backend(backend)
    except gc.BackendError as exc:
        print(f"graphc demo: {exc}", file=sys.stderr)
        return 2
    epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    if epochs < 0:
        print(f"graphc demo: --epochs must be 0 or more, got {epochs}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:  # checked before training, not after it: the pictures and the model go here
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        why = exc.strerror or str(exc)
        print(f"graphc demo: --out {str(out)!r} cannot be the output folder: {why}",
              file=sys.stderr)
        return 2
    threadpool_limits(1, user_api="blas")  # small GEMMs: threads cost more than they save
    gc.manual_seed(0)

    (x_train, y_train), (x_test, y_test) = gc.datasets.digits()
    (x_fit, y_fit), (x_val, y_val) = gc.datasets.split(x_train, y_train, test_size=0.1)
    x_fit, x_val, x_test = ((a / 16).reshape(-1, 1, 8, 8) for a in (x_fit, x_val, x_test))
    print(f"digits: {len(x_fit)} training, {len(x_val)} validation and {len(x_test)} test "
          f"images of 8x8 pixels; backend {backend}")

    model = lenet()
    print(f"{model}\n{model.num_parameters()} trainable parameters")
    optimizer = gc.optim.Adam(model.parameters(), lr=2e-3)
    step, evaluate = gc.train.supervised(model, gc.nn.functional.cross_entropy, optimizer,
                                         ("N", 1, 8, 8), backend=backend)
    print(f"compiled training step: {len(step.graph.nodes)} nodes (forward, backward and the "
          f"Adam update), {len(step.graph.updates)} parameter updates")

    history = gc.train.fit(step, (x_fit, y_fit), epochs, batch_size=32, eval_fn=evaluate,
                           val_data=(x_val, y_val))
    test = gc.train.evaluate(evaluate, (x_test, y_test))
    print(f"test accuracy: {test['accuracy']:.4f} on {len(x_test)} digits never seen in "
          f"training (loss {test['loss']:.4f})")

    compare_speed(step, (x_fit[:32], y_fit[:32]), ("numpy", "llvm"))

    picture = out / ("demo_train_step.svg" if gc.viz.dot_available() else "demo_train_step.dot")
    gc.viz.render(step, picture)
    print(f"graph of the training step: {picture}")
    if not epochs:
        print("loss curves not drawn: no epoch was trained (--epochs 0)")
    else:
        try:
            print(f"loss curves: {gc.plot.curves(history, out / 'demo_loss.png', title='LeNet')}")
        except gc.plot.MissingDependencyError as exc:
            print(f"loss curves not drawn: {exc}")
    print(f"trained model: {gc.save(model, out / 'demo_lenet.graphc')} (gc.load it back)")
    print(f"done in {time.perf_counter() - started:.1f}s")
    return 0 if np.isfinite(test["loss"]) else 1


def compare_speed(step, batch, backends, seconds: float = 0.5) -> dict[str, float]:
    """Compile the very graph `step` runs on each backend and time one training step of
    `batch` on each, side by side; the parameters are restored afterwards, so the trained
    model is untouched. Returns ms per step by backend (what could be measured)."""
    import graphc as gc

    program = step.graph
    tensor = lambda node: gc.Tensor(node, program)  # noqa: E731
    storages = [n.attrs["storage"] for n in program.nodes if n.op.name == "parameter"]
    saved = [s.value.copy() for s in storages]
    print(f"one training step on a batch of {len(batch[0])}, the same optimized graph on "
          f"each backend:")
    timings: dict[str, float] = {}
    try:
        for backend in backends:
            started = time.perf_counter()
            try:
                fn = gc.compile([tensor(n) for n in program.inputs],
                                [tensor(n) for n in program.outputs],
                                updates={tensor(p): tensor(v) for p, v in program.updates},
                                backend=backend)
            except gc.BackendError as exc:
                print(f"  {backend:<6} not available here: {exc}")
                continue
            compiled = time.perf_counter() - started
            for _ in range(5):
                fn(*batch)
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                fn(*batch)
                calls += 1
            ms = (time.perf_counter() - started) / calls * 1000
            timings[backend] = ms
            ratio = (f"  {timings[backends[0]] / ms:.1f}x the {backends[0]} backend's speed"
                     if backend != backends[0] and backends[0] in timings else "")
            print(f"  {backend:<6} {ms:7.3f} ms/step  (compiled in {compiled:.2f} s){ratio}")
    finally:
        for storage, value in zip(storages, saved):
            storage.write(value)
    return timings
