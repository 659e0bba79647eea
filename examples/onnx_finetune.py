"""A CNN pretrained in PyTorch, brought into graphc through ONNX, fine-tuned, and sent back.

1. PyTorch pretrains a small CNN (conv 3x3 - batch norm - ReLU - max-pool, twice, then a
   linear layer) on a few hundred of the 8x8 digits, for a few seconds;
2. ``torch.onnx.export`` writes it (eval mode, a symbolic batch dim);
3. ``gc.onnx.load`` imports it: its weights become graphc parameters, the batch-norm running
   statistics frozen buffers, so the model fine-tunes with ``gc.optim`` and
   ``gc.train.fit`` like any graphc model — here on the whole training set;
4. ``gc.onnx.export`` writes the fine-tuned evaluation function back to ONNX, and
   onnxruntime (when installed) runs the file: its outputs must equal graphc's.

It prints the test accuracy of the PyTorch model, of the imported model before fine-tuning
(the same number: the import is exact) and after, and the largest difference between
onnxruntime's outputs and graphc's.

Needs the test extras (torch, onnxscript; onnxruntime for step 4).
Run:  python examples/onnx_finetune.py [--quick] [--backend llvm]
"""

import warnings

import numpy as np
import torch
from common import done, setup

import graphc as gc

args = setup("Fine-tuning a PyTorch CNN in graphc through ONNX, and exporting it back")
F = gc.nn.functional
PRETRAIN_SAMPLES, PRETRAIN_EPOCHS = 300, 4 if args.quick else 8
FINE_EPOCHS = 3 if args.quick else 15

(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
x_train = (x_train / 16).reshape(-1, 1, 8, 8).astype(np.float32)
x_test = (x_test / 16).reshape(-1, 1, 8, 8).astype(np.float32)


# 1. Pretrain in PyTorch, on a few hundred digits.
class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),  # (N, 8, 4, 4)
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2))  # (N, 16, 2, 2)
        self.classifier = torch.nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


torch.manual_seed(0)
net = SmallCNN()
opt = torch.optim.Adam(net.parameters(), lr=3e-3)
xs, ys = torch.from_numpy(x_train[:PRETRAIN_SAMPLES]), torch.from_numpy(y_train[:PRETRAIN_SAMPLES])
for _ in range(PRETRAIN_EPOCHS):
    for i in range(0, PRETRAIN_SAMPLES, 32):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xs[i:i + 32]), ys[i:i + 32]).backward()
        opt.step()
net.eval()
with torch.no_grad():
    torch_accuracy = (net(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
print(f"PyTorch, pretrained on {PRETRAIN_SAMPLES} digits: test accuracy {torch_accuracy:.3f}")

# 2. Export with PyTorch. The TorchScript exporter (dynamo=False) takes a second where the
#    dynamo one takes several (tests/onnx/test_torch_models.py checks that one); without
#    constant folding batch norm stays a node of its own, with its statistics.
pretrained = args.out / "digits_cnn_pytorch.onnx"
with warnings.catch_warnings():  # (PyTorch says the TorchScript exporter is the legacy one)
    warnings.simplefilter("ignore", DeprecationWarning)
    torch.onnx.export(net, (torch.from_numpy(x_test[:2]),), str(pretrained),
                      input_names=["x"], output_names=["logits"], dynamo=False,
                      do_constant_folding=False, dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})
print(f"exported by PyTorch: {pretrained}")

# 3. Import into graphc and fine-tune on the whole training set.
model = gc.onnx.load(pretrained)
graph = gc.Graph("finetune")
with graph:
    (x,) = model.placeholders()  # (N, 1, 8, 8): the batch dim stays symbolic
    labels = gc.placeholder("labels", ("N",), "int64")
    logits = model(x)
    params = model.parameters()
    loss = F.cross_entropy(logits, labels)
    adam = gc.optim.Adam(params, lr=2e-3)  # skips the frozen batch-norm statistics
    step = gc.compile([x, labels], [loss], updates=adam.updates(loss), backend=args.backend)
    predict = gc.compile([x], logits, backend=args.backend)
trainable = [p for p in params if p.requires_grad]
print(f"imported: {sum(p.value.size for p in trainable)} trainable numbers in "
      f"{len(trainable)} parameters, {len(params) - len(trainable)} frozen statistics")


def accuracy() -> float:
    return float((predict(x_test).argmax(axis=1) == y_test).mean())


before = accuracy()
print(f"graphc, imported:   test accuracy {before:.3f}")
history = gc.train.fit(step, (x_train, y_train), epochs=FINE_EPOCHS, batch_size=32,
                       verbose=0)
after = accuracy()
print(f"graphc, fine-tuned: test accuracy {after:.3f} ({FINE_EPOCHS} epochs, final loss "
      f"{history['loss'][-1]:.3f})")

# 4. Export the fine-tuned model and run it in onnxruntime.
finetuned = args.out / "digits_cnn_finetuned.onnx"
gc.onnx.export(predict, finetuned)
print(f"exported by graphc: {finetuned}")
try:
    import onnxruntime as ort
except ImportError:
    print("onnxruntime is not installed: the exported file is not run")
else:
    session = ort.InferenceSession(str(finetuned), providers=["CPUExecutionProvider"])
    (ort_logits,) = session.run(None, {session.get_inputs()[0].name: x_test})
    ours = predict(x_test)
    gap = float(np.abs(ort_logits - ours).max())
    print(f"onnxruntime on the exported file: test accuracy "
          f"{(ort_logits.argmax(axis=1) == y_test).mean():.3f}, largest difference from "
          f"graphc's logits {gap:.1e}")
    np.testing.assert_allclose(ort_logits, ours, rtol=1e-5, atol=1e-5)
done(args)
