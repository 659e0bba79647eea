"""A LeNet-style convolutional network on the 8x8 digits, trained with gc.train.fit.

conv 3x3 (16) - ReLU - max-pool 2 - conv 3x3 (32) - ReLU - max-pool 2 - 64 ReLU units - 10,
SGD with momentum 0.9. Convolutions share their weights across positions, so the network sees
local strokes wherever they are: fewer parameters than the MLP, better test accuracy. Writes
the training step's graph (each layer a cluster) and the curves.

Run:  python examples/lenet_digits.py [--quick]
"""

from common import done, draw, setup

import graphc as gc

args = setup("LeNet-style CNN on digits: two conv/pool stages and two dense layers")
F, nn = gc.nn.functional, gc.nn


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)  # (N, 16, 8, 8)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)  # (N, 32, 4, 4)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(gc.relu(self.conv1(x)), 2)
        x = F.max_pool2d(gc.relu(self.conv2(x)), 2)
        return self.fc2(gc.relu(self.fc1(gc.ops.flatten(x))))


(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
x_train, x_test = (x_train / 16).reshape(-1, 1, 8, 8), (x_test / 16).reshape(-1, 1, 8, 8)

model = LeNet()
print(model, f"\n{model.num_parameters()} parameters")
opt = gc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
step, evaluate = gc.train.supervised(model, F.cross_entropy, opt, ("N", 1, 8, 8),
                                     backend=args.backend)
history = gc.train.fit(step, (x_train, y_train), epochs=3 if args.quick else 15,
                       batch_size=32)
test = gc.train.evaluate(evaluate, (x_test, y_test))
print(f"LeNet test accuracy: {test['accuracy']:.4f} ({len(y_test)} test digits, "
      f"{history.epochs} epochs)")
print(f"curves: {gc.plot.curves(history, args.out / 'lenet_digits_curves.png', title='LeNet')}")
draw(args, step, "lenet_train_step")
done(args)
