"""Linear regression three ways on the diabetes data: the closed form (normal equations),
gradient descent through a compiled step, and ridge regression (L2 penalty) both ways.

Least squares has a closed form, w = (XᵀX)⁻¹Xᵀy; gradient descent on the mean squared error
reaches the same weights step by step — what every deep network does when no closed form
exists. Ridge adds λ‖w‖² (the bias is not penalized): the closed form becomes
(XᵀX + nλI)⁻¹Xᵀy, and the same penalty added to the compiled cost (gc.optim.l2_penalty)
leads gradient descent there too.

Run:  python examples/linear_regression.py [--quick]
"""

import numpy as np
from common import done, setup

import graphc as gc

args = setup("Linear regression on diabetes: closed form vs gradient descent vs ridge")
F = gc.nn.functional

(x_train, y_train), (x_test, y_test) = gc.datasets.diabetes()
x_train, x_test = gc.datasets.standardize(x_train, x_test)
n, d = x_train.shape
LAMBDA = 0.05


def closed_form(lam: float) -> tuple[np.ndarray, float]:
    """Weights and bias minimizing mean((Xw + b - y)^2) + lam * |w|^2 (b unpenalized)."""
    X = np.hstack([x_train, np.ones((n, 1), np.float32)]).astype(np.float64)
    reg = n * lam * np.diag([1.0] * d + [0.0])
    theta = np.linalg.solve(X.T @ X + reg, X.T @ y_train.astype(np.float64))
    return theta[:d], float(theta[d])


def gradient_descent(lam: float, steps: int) -> tuple[np.ndarray, float]:
    """Full-batch gradient descent on the same cost, as one compiled training step."""
    model = gc.nn.Linear(d, 1, rng=0)
    opt = gc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step, _ = gc.train.supervised(
        model, lambda pred, y: F.mse_loss(gc.reshape(pred, ("N",)), y), opt, ("N", d),
        y_dtype="float32", penalty=(lambda: gc.optim.l2_penalty(model, lam)) if lam else None,
        backend=args.backend)
    for _ in range(steps):
        step(x_train, y_train)
    return model.weight.value[:, 0], float(model.bias.value[0])


def report(name: str, w: np.ndarray, b: float) -> float:
    pred = x_test @ w + b
    mse = float(np.mean((pred - y_test) ** 2))
    r2 = 1 - mse / float(np.var(y_test))
    print(f"  {name:<28} test MSE {mse:8.1f}   R² {r2:.3f}   |w| {np.linalg.norm(w):6.2f}")
    return mse


steps = 100 if args.quick else 2000
print(f"{n} training patients, {d} standardized features; test on {len(x_test)}")
w_ls, b_ls = closed_form(0.0)
w_gd, b_gd = gradient_descent(0.0, steps)
w_rr, b_rr = closed_form(LAMBDA)
w_rg, b_rg = gradient_descent(LAMBDA, steps)
baseline = float(np.mean((y_train.mean() - y_test) ** 2))
print(f"  {'predict the mean':<28} test MSE {baseline:8.1f}")
report("least squares, closed form", w_ls, b_ls)
report(f"least squares, GD x{steps}", w_gd, b_gd)
report(f"ridge λ={LAMBDA}, closed form", w_rr, b_rr)
report(f"ridge λ={LAMBDA}, GD x{steps}", w_rg, b_rg)
print(f"gradient descent vs closed form: max |Δw| = {np.abs(w_gd - w_ls).max():.4f} "
      f"(least squares), {np.abs(w_rg - w_rr).max():.4f} (ridge); ridge shrinks |w| from "
      f"{np.linalg.norm(w_ls):.1f} to {np.linalg.norm(w_rr):.1f}")
done(args)
