"""A small ResNet-style CNN on the digits: residual blocks with skip connections.

Each gc.nn.ResidualBlock computes relu(bn(conv(relu(bn(conv(x))))) + x): the block learns a
correction to its input, and the identity path carries the gradient straight back to early
layers. The script builds the same network twice — with the skips and without them — trains
both the same way and compares their training losses and test accuracy. Writes the network's
forward graph (each block a cluster).

Run:  python examples/resnet_block.py [--quick]
"""

from common import done, draw, setup

import graphc as gc

args = setup("ResNet-style CNN on digits: residual blocks, with and without skips")
F, nn = gc.nn.functional, gc.nn

(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
x_train, x_test = (x_train / 16).reshape(-1, 1, 8, 8), (x_test / 16).reshape(-1, 1, 8, 8)
BLOCKS = 3


def resnet(skip: bool) -> nn.Sequential:
    blocks = [nn.ResidualBlock(12, skip=skip, rng=i) for i in range(BLOCKS)]
    return nn.Sequential(
        nn.Conv2d(1, 12, 3, padding=1, bias=False, rng=10), nn.BatchNorm2d(12), nn.ReLU(),
        *blocks,  # (N, 12, 8, 8)
        nn.ResidualBlock(12, 24, stride=2, skip=skip, rng=5),  # (N, 24, 4, 4)
        nn.AvgPool2d(4), nn.Flatten(), nn.Linear(24, 10, rng=11))  # global average pooling


results = {}
for skip in (True, False):
    model = resnet(skip)
    opt = gc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    step, evaluate = gc.train.supervised(model, F.cross_entropy, opt, ("N", 1, 8, 8),
                                         backend=args.backend)
    history = gc.train.fit(step, (x_train, y_train), epochs=1 if args.quick else 8,
                           batch_size=32, verbose=2)
    accuracy = gc.train.evaluate(evaluate, (x_test, y_test))["accuracy"]
    results[skip] = (accuracy, history)
    name = "with skips" if skip else "plain (no skips)"
    print(f"{name}: {model.num_parameters()} parameters, test accuracy {accuracy:.4f}")
    if skip:
        draw(args, evaluate, "resnet_forward")
losses = "  ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(results[True][1]["loss"],
                                                      results[False][1]["loss"]))
print(f"training loss per epoch, with skips / plain: {losses}")
print(f"ResNet test accuracy: {results[True][0]:.4f} (the same layers without skips: "
      f"{results[False][0]:.4f})")
done(args)
