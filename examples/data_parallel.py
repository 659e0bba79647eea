"""Data-parallel training on several processes: the digits CNN, its gradients averaged by MPI.

Every process runs this same script on its shard of each epoch (batch 32 per process); the
training step allreduces the gradients in buckets, inside the compiled step, and batch norm is
synchronized across the processes (nn.SyncBatchNorm). Rank 0 alone prints, draws and plots.

Run:  mpiexec -n 2 .venv/bin/python examples/data_parallel.py [--quick] [--backend llvm]
      python examples/data_parallel.py          (one process: the same script, no MPI)
Several machines (the same paths on each): mpiexec -f hosts -n 8 .venv/bin/python ...
"""

from common import done, draw, setup

import graphc as gc
from graphc import distributed as D

args = setup("Data-parallel CNN on digits: MPI processes averaging their gradients")
F, nn = gc.nn.functional, gc.nn
D.set_timeout(600)  # a process that dies mid-step ends the job instead of hanging it

model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.SyncBatchNorm(16), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.SyncBatchNorm(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 2 * 2, 10))
(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
x_train, x_test = (x_train / 16).reshape(-1, 1, 8, 8), (x_test / 16).reshape(-1, 1, 8, 8)

batch = 32
if D.is_main():
    print(f"{D.size()} process(es), batch {batch} per process ({batch * D.size()} per step), "
          f"{model.num_parameters()} parameters")
opt = gc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
# compiling the step is collective: every process compiles it, rank 0's weights are broadcast
step, evaluate = gc.train.supervised(model, F.cross_entropy, opt, ("N", 1, 8, 8),
                                     backend=args.backend, distributed=True)
history = gc.train.fit(step, (x_train, y_train), epochs=2 if args.quick else 10,
                       batch_size=batch, verbose=2)
test = gc.train.evaluate(evaluate, (x_test, y_test))  # the same weights on every process
if D.is_main():
    print(f"data-parallel CNN test accuracy: {test['accuracy']:.4f} on {D.size()} process(es) "
          f"({history.epochs} epochs, {len(y_test)} test digits)")
    print(f"curves: {gc.plot.curves(history, args.out / 'data_parallel_curves.png')}")
    if not args.quick:  # (laying out the whole step's graph takes dot a while)
        draw(args, step, "data_parallel_train_step")
done(args)
