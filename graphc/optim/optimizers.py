"""Optimizers as update graphs: ``opt.updates(cost)`` returns ``{parameter: new value}``.

Each optimizer writes PyTorch's ``torch.optim`` formula and defaults as graph operations,
so one compiled function does forward, backward and the update (Theano's ``updates=``):

    opt = gc.optim.Adam(model.parameters(), lr=1e-3)
    step = gc.compile([x, y], loss, updates=opt.updates(loss))

All optimizer state — the step counter, moment estimates, momentum buffers — lives in
parameters (``opt.state_tensors()``), so it is updated by the same compiled step and saved
with ``gc.save(opt, path)`` or a training checkpoint.

Every optimizer takes ``clip_value=`` (clamp each gradient element) and ``clip_norm=``
(rescale all gradients to a global L2 norm at most clip_norm); both may be given, value
clipping first. ``lr`` may be a float or a schedule from ``gc.optim.schedules``.

The learning rate lives in a float64 scalar parameter, ``opt.lr_parameter`` (state key
``"lr"``), read by the compiled step at every call: ``opt.lr = 0.01`` (or a
``ReduceLROnPlateau`` callback) changes the rate of an already compiled step, without
compiling again, and checkpoints keep it. With a schedule, the parameter is a multiplier of the
schedule's value instead (state key ``"lr_scale"``, 1.0 at first): update k uses
``lr_scale * schedule(k)``.

``weight_decay`` is PyTorch's: ``g + weight_decay * p`` for every parameter, biases included
(use ``gc.optim.l2_penalty`` to penalize weights only).

Scalar coefficients (bias corrections, schedules) are computed in float64 from the int64 step
counter, as PyTorch computes them in Python floats, then cast to each parameter's dtype.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

import numpy as np

from .. import ops
from ..arguments import number
from ..errors import GraphError, ShapeError
from ..ir.graph import name_scope
from ..ir.tensor import Tensor
from ..ops.sources import parameter
from ..passes.autodiff import grad
from .clip import clip_by_global_norm, clip_by_value
from .schedules import Schedule

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "NAdam"]


def _coef(x, dtype: np.dtype):
    """A scalar coefficient in a parameter's dtype (Python floats stay weak constants)."""
    return ops.cast(x, dtype) if isinstance(x, Tensor) and x.dtype != dtype else x


#: a per-parameter step count's storage -> the storage of its optimizer's count: how a step
#: saved before the per-parameter counts is restored (graphc.io gives each missing count the
#: optimizer's, the count that version used for every parameter)
STEP_COUNT_OF: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Optimizer:
    """Base class: parameters, learning rate (or schedule), clipping, state, ``updates``.

    Subclasses create their per-parameter state with ``_slot`` in ``__init__`` and define
    ``_update(i, p, g, lr, k)`` returning the new parameter and the new value of each slot.
    ``k`` is the number of updates already applied (a float64 scalar tensor).
    """

    name = "optimizer"

    def __init__(self, params, lr, *, clip_value: float | None = None,
                 clip_norm: float | None = None) -> None:
        if hasattr(params, "parameters"):
            params = params.parameters()
        self.params: list[Tensor] = []
        for p in params:
            if not isinstance(p, Tensor) or p.op != "parameter":
                raise GraphError(f"{type(self).__name__} optimizes parameters, got {p!r}")
            if p.dtype.kind != "f":
                raise GraphError(f"{type(self).__name__}: parameter {p.name!r} is {p.dtype}; "
                                 "only float parameters can be trained")
            if all(q is not p for q in self.params):
                self.params.append(p)
        if not self.params:
            raise GraphError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(lr, Schedule):
            lr = number(lr, f"{type(self).__name__}: the learning rate", least=0.0)
        self.schedule: Schedule | None = lr if isinstance(lr, Schedule) else None
        # checked here, not first in updates(): a bad value is the constructor's argument
        self.clip_value = None if clip_value is None else self._hyper("clip_value", clip_value,
                                                                      above=0.0)
        self.clip_norm = None if clip_norm is None else self._hyper("clip_norm", clip_norm,
                                                                    above=0.0)
        self._state: dict[str, Tensor] = {}
        self._slots: list[dict[str, Tensor]] = [{} for _ in self.params]
        self.step_count = parameter(f"{self.name}.step", np.array(0, np.int64))
        self._state["step"] = self.step_count
        self.nonfinite_steps = parameter(f"{self.name}.nonfinite_steps", np.array(0, np.int64))
        self._state["nonfinite_steps"] = self.nonfinite_steps
        # a parameter, not a constant: changing it needs no recompilation (see the docstring)
        lr_key, lr_value = ("lr", float(lr)) if self.schedule is None else ("lr_scale", 1.0)
        self.lr_parameter = parameter(f"{self.name}.{lr_key}", np.array(lr_value, np.float64))
        self._state[lr_key] = self.lr_parameter
        self._skipped: Tensor | None = None

    def _hyper(self, what: str, value, **bounds) -> float:
        """A hyperparameter as a float, refused at once where torch.optim refuses it (out of
        range, NaN, a string): the error names the optimizer and the argument."""
        return number(value, f"{type(self).__name__}: {what}", **bounds)

    def _betas(self, betas) -> tuple[float, float]:
        if isinstance(betas, (str, bytes)) or np.ndim(betas) != 1 or len(betas) != 2:
            raise GraphError(f"{type(self).__name__}: betas must be a pair of numbers, got "
                             f"{betas!r}")
        return (self._hyper("betas[0]", betas[0], least=0.0, below=1.0),
                self._hyper("betas[1]", betas[1], least=0.0, below=1.0))

    # -- state -------------------------------------------------------------------------------
    def _slot(self, i: int, slot: str, fill: float = 0.0, shape=None) -> Tensor:
        """Create state for parameter `i` (zeros like it, or a scalar with `shape=()`)."""
        p = self.params[i]
        value = np.full(p.shape if shape is None else shape, fill, dtype=p.dtype)
        tensor = parameter(f"{self.name}.{p.name}.{slot}", value)
        self._slots[i][slot] = tensor
        self._state[f"{i}.{slot}"] = tensor
        return tensor

    def _step_slot(self, i: int) -> Tensor:
        """Parameter `i`'s own update count (int64), the ``t`` of its bias corrections and
        first-step rules: PyTorch's ``state["step"]``, which starts when the parameter first
        gets a gradient. The optimizer's ``step`` counts every update (the schedules' clock);
        a parameter frozen for a while, or used by only some of the steps sharing the
        optimizer, has taken fewer."""
        tensor = parameter(f"{self.name}.{self.params[i].name}.step", np.array(0, np.int64))
        self._slots[i]["step"] = self._state[f"{i}.step"] = tensor
        STEP_COUNT_OF[tensor.node.attrs["storage"]] = self.step_count.node.attrs["storage"]
        return tensor

    def state_tensors(self) -> dict[str, Tensor]:
        """Every state parameter by key: ``"step"`` and ``"<param index>.<slot>"``."""
        return dict(self._state)

    def state(self) -> dict[str, np.ndarray]:
        """A copy of the state's values (what ``gc.save(opt, path)`` stores)."""
        return {k: t.value for k, t in self._state.items()}

    def load_state(self, state: Mapping[str, np.ndarray]) -> Optimizer:
        """Set the state from ``state()`` output; checked completely before anything is set."""
        # (a state saved before the skip counter or the learning-rate parameter existed has no
        # "nonfinite_steps", "lr" or "lr_scale": those are kept as they are; one saved before
        # the per-parameter counts "<i>.step" gets the optimizer's count, what it used then)
        counts = {key for key in self._state if key.endswith(".step") and key not in state}
        if counts and "step" in state:
            state = {**state, **{key: np.asarray(state["step"]) for key in counts}}
        missing = sorted(set(self._state) - set(state) - {"nonfinite_steps", "lr", "lr_scale"})
        extra = sorted(set(state) - set(self._state))
        if missing or extra:
            raise GraphError(f"{type(self).__name__}.load_state: missing keys {missing}, "
                             f"unexpected keys {extra}")
        present = {key: t for key, t in self._state.items() if key in state}
        for key, t in present.items():
            if np.shape(state[key]) != tuple(t.shape):
                raise ShapeError(f"optimizer state {key}: expected shape {tuple(t.shape)}, got "
                                 f"{np.shape(state[key])}")
            t.node.attrs["storage"].checked(state[key], key)
            if key in ("lr", "lr_scale"):  # what the setter refuses, a file may not bring in
                self._hyper(f"state {key!r}", np.asarray(state[key]).item(), least=0.0)
        for key, t in present.items():
            t.node.attrs["storage"].write(state[key], key)
        return self

    # -- the learning rate -------------------------------------------------------------------
    @property
    def lr(self) -> float | Schedule:
        """The learning rate now in ``lr_parameter`` (a float), or the schedule. Assigning a
        float writes the parameter: compiled steps use it from their next call on."""
        return self.schedule if self.schedule is not None else float(self.lr_parameter.value)

    @lr.setter
    def lr(self, value: float) -> None:
        if self.schedule is not None:
            raise GraphError(f"{type(self).__name__} follows the schedule {self.schedule!r}, "
                             "which is part of its compiled update graph; scale it instead "
                             "through opt.lr_parameter (the multiplier lr_scale, 1.0 at first)")
        if isinstance(value, Schedule):
            raise GraphError(f"{type(self).__name__}: a learning rate schedule is given when "
                             f"the optimizer is built, not assigned to opt.lr (got {value!r})")
        self.lr_parameter.value = self._hyper("the learning rate", value, least=0.0)

    def current_lr(self) -> float:
        """The learning rate the next update will use (from the step counter, the schedule
        and ``lr_parameter``), as a Python float."""
        scale = float(self.lr_parameter.value)
        if self.schedule is None:
            return scale
        return scale * self.schedule.value(int(self.step_count.value))

    # -- the update graph --------------------------------------------------------------------
    def learning_rate(self, k):
        """The learning rate at update `k`: a float64 tensor reading ``lr_parameter`` when
        `k` is a tensor (what the update graph uses), else a float from its current value."""
        if not isinstance(k, Tensor):
            scale = float(self.lr_parameter.value)
            return scale if self.schedule is None else scale * self.schedule.value(k)
        if self.schedule is None:
            return self.lr_parameter
        return self.lr_parameter * self.schedule(k)

    def gradients(self, cost: Tensor, distributed=False) -> list[Tensor | None]:
        """gc.grad of the cost, clipped as configured; None for a parameter the cost does not
        use (PyTorch's ``p.grad is None``). `distributed` (True or a
        ``gc.distributed.DataParallel``) averages them across MPI processes before clipping,
        as PyTorch's DDP averages them in the backward pass."""
        return self._gradients(cost, distributed)[1]

    def _gradients(self, cost: Tensor, distributed=False
                   ) -> tuple[list[Tensor | None], list[Tensor | None]]:
        """The gradients as gc.grad gives them (averaged, if distributed) and clipped: the
        finiteness check of skip_nonfinite reads the first, since clipping turns an infinity
        into a finite clip_value."""
        from ..ir.graph import topological

        reached = {n.uid for n in topological([cost.node])}
        # frozen parameters (``requires_grad_(False)``, ``freeze()``) are skipped like unused
        # ones: no gradient is built for them, so the step holds no backward work for them
        used = [p for p in self.params if p.node.uid in reached and
                p.node.attrs["storage"].requires_grad]
        if not used and any(p.node.uid in reached for p in self.params):
            # every parameter the cost uses is frozen: skipped as given (PyTorch's step
            # leaves parameters without a gradient alone), so the step changes none of them
            return [None] * len(self.params), [None] * len(self.params)
        if not used:
            names = ", ".join(p.name for p in self.params[:5])
            raise GraphError(f"{type(self).__name__}: the cost depends on none of its "
                             f"parameters ({names}{', ...' if len(self.params) > 5 else ''})")
        if distributed:  # averaged across MPI processes, weighted by their sample counts
            from ..distributed import DataParallel

            wrapper = distributed if isinstance(distributed, DataParallel) else DataParallel(self)
            grads = wrapper.gradients(cost, used)
        else:
            grads = grad(cost, used)
        raw = grads
        with name_scope("clip"):
            if self.clip_value is not None:
                grads = clip_by_value(grads, self.clip_value)
            if self.clip_norm is not None:
                grads = clip_by_global_norm(grads, self.clip_norm)

        def by_param(values):
            found = {p.node.uid: g for p, g in zip(used, values)}
            return [found.get(p.node.uid) for p in self.params]

        return by_param(raw), by_param(grads)

    def updates(self, cost: Tensor, skip_nonfinite: bool = False,
                distributed=False) -> dict[Tensor, Tensor]:
        """The update dict for ``gc.compile``: every parameter, every state slot, the step
        counter. Built in the cost's graph, under a name scope named after the optimizer.

        As in PyTorch, a parameter the cost does not use is skipped (neither it nor its state
        changes: no weight decay, no momentum), and so is a frozen one, even when every
        parameter the cost uses is frozen; a cost that uses none of them is an error.

        With `skip_nonfinite`, a step whose cost or any gradient holds a NaN or an infinity
        changes nothing at all: no parameter, optimizer state or step counter, and none of the
        default updates the cost triggers (batch-norm statistics, dropout's random state) —
        those are taken into this dict, guarded too. `opt.skipped` is then a scalar bool
        tensor a step can output, and the state's ``nonfinite_steps`` counts the skips.

        With `distributed` (True, or a ``gc.distributed.DataParallel`` for its bucket
        options), the gradients are averaged across the MPI processes, weighted by each one's
        sample count, before clipping and the update; compiling the step is then collective
        (parameters and optimizer state are broadcast from rank 0). In one process it changes
        nothing.
        """
        if not isinstance(cost, Tensor):
            raise GraphError(f"{type(self).__name__}.updates needs the symbolic cost, got "
                             f"{type(cost).__name__}")
        graph = cost.graph
        with graph:
            raw, grads = self._gradients(cost, distributed)
            out: dict[Tensor, Tensor] = {}
            with name_scope(self.name):
                k = ops.cast(self.step_count, np.float64)
                lr = self.learning_rate(k)
                for i, (p, g) in enumerate(zip(self.params, grads)):
                    if g is None:
                        continue
                    own = self._slots[i].get("step")
                    # t - 1 of the update formulas: the parameter's own count where it has one
                    k_i = k if own is None else ops.cast(own, np.float64)
                    new_p, slots = self._update(i, p, g, lr, k_i)
                    if own is not None:
                        slots["step"] = own + 1
                    out[p] = new_p
                    out.update({self._slots[i][s]: v for s, v in slots.items()})
                out[self.step_count] = self.step_count + 1
                if skip_nonfinite:
                    out = self._guarded(cost, [g for g in raw if g is not None], out,
                                        distributed)
                elif distributed:  # in the step (unchanged), so compiling broadcasts it too
                    out[self.nonfinite_steps] = self.nonfinite_steps
        return out

    def _guarded(self, cost: Tensor, grads: list[Tensor], out: dict, distributed=False) -> dict:
        """Every update as ``where(all finite, new, old)``, the default updates included.

        Distributed, the decision is the same on every process: the gradients are the averaged
        ones already, and the cost's part is the cost of the whole batch, which is not finite
        iff some process *with samples* has a non-finite cost (one scalar allreduce); a process
        with an empty batch (its mean cost is NaN) neither skips alone nor makes the others
        skip, as one process holding the whole batch would not."""
        from ..function import default_updates

        with name_scope("skip_nonfinite"):
            # one scalar that is NaN iff anything is not finite: x * 0 is NaN for inf and NaN
            flag = self._global_cost_flag(cost, distributed)
            for g in grads:
                flag = flag + ops.cast(ops.sum(g * 0.0), cost.dtype)
            finite = ops.isfinite(flag)
            roots = [cost.node, *(g.node for g in grads)]
            explicit = {p.node.uid for p in out}
            for param, value in default_updates(cost.graph, roots, explicit):
                out[Tensor(param, cost.graph)] = Tensor(value, cost.graph)
            guarded = {p: ops.where(finite, v, p) for p, v in out.items()}
            self._skipped = ops.equal(finite, False)
            guarded[self.nonfinite_steps] = self.nonfinite_steps + ops.cast(self._skipped,
                                                                            np.int64)
        return guarded

    @staticmethod
    def _global_cost_flag(cost: Tensor, distributed) -> Tensor:
        """``cost * 0``, NaN iff the cost is not finite; distributed (several processes, or
        a DataParallel built alone), the cost of all processes' samples together."""
        if not distributed:
            return cost * 0.0
        from ..distributed import DataParallel, runtime
        from ..distributed.data_parallel import cost_flag_of_all

        wrapper = distributed if isinstance(distributed, DataParallel) else None
        if runtime.size() == 1 and not (wrapper is not None and wrapper.build_alone):
            return cost * 0.0
        return cost_flag_of_all(cost, wrapper.samples if wrapper is not None else None,
                                overlap=wrapper is None or wrapper.overlap)

    @property
    def skipped(self) -> Tensor:
        """A scalar bool tensor: did this step skip its update (a NaN or an inf in the cost or
        a gradient)? Exists once ``updates(cost, skip_nonfinite=True)`` was built."""
        if self._skipped is None:
            raise GraphError(f"{type(self).__name__}.skipped exists once the update graph was "
                             "built with opt.updates(cost, skip_nonfinite=True)")
        return self._skipped

    def _update(self, i: int, p: Tensor, g: Tensor, lr, k) -> tuple[Tensor, dict]:
        """Parameter `i`'s new value and slots from its gradient `g`, at learning rate `lr`;
        `k` (float64) is the number of updates it has had (its own "step" slot, if the
        optimizer keeps one: `_step_slot`)."""
        raise NotImplementedError

    @staticmethod
    def _decayed(g: Tensor, p: Tensor, weight_decay: float) -> Tensor:
        return g + weight_decay * p if weight_decay else g

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, {len(self.params)} parameters)"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay
    (torch.optim.SGD): ``b = momentum*b + (1-dampening)*g`` (``b = g`` at the first step),
    ``g = g + momentum*b`` if nesterov else ``b``; ``p = p - lr*g``."""

    name = "sgd"

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, dampening: float = 0.0, **clip) -> None:
        super().__init__(params, lr, **clip)
        self.momentum = self._hyper("momentum", momentum, least=0.0)
        self.dampening = self._hyper("dampening", dampening)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise GraphError("Nesterov momentum requires a momentum > 0 and zero dampening")
        self.weight_decay = self._hyper("weight_decay", weight_decay, least=0.0)
        if self.momentum:
            for i in range(len(self.params)):
                self._slot(i, "momentum_buffer")
                if self.dampening:  # (the first update starts the buffer at g)
                    self._step_slot(i)

    def _update(self, i, p, g, lr, k):
        g = self._decayed(g, p, self.weight_decay)
        slots = {}
        if self.momentum:
            buf = self._slots[i]["momentum_buffer"]
            new_buf = self.momentum * buf + (1.0 - self.dampening) * g
            if self.dampening:  # PyTorch starts the buffer at the first gradient itself
                new_buf = ops.where(ops.equal(k, 0.0), g, new_buf)
            slots["momentum_buffer"] = new_buf
            g = g + self.momentum * new_buf if self.nesterov else new_buf
        return p - _coef(lr, p.dtype) * g, slots


class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad): ``sum += g²``, ``p -= clr * g / (sqrt(sum) + eps)`` with
    ``clr = lr / (1 + k * lr_decay)``."""

    name = "adagrad"

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, **clip) -> None:
        super().__init__(params, lr, **clip)
        self.lr_decay = self._hyper("lr_decay", lr_decay, least=0.0)
        self.weight_decay = self._hyper("weight_decay", weight_decay, least=0.0)
        self.eps = self._hyper("eps", eps, least=0.0)
        initial = self._hyper("initial_accumulator_value", initial_accumulator_value, least=0.0)
        for i in range(len(self.params)):
            self._slot(i, "sum", initial)
            if self.lr_decay:
                self._step_slot(i)

    def _update(self, i, p, g, lr, k):
        g = self._decayed(g, p, self.weight_decay)
        clr = lr / (1.0 + k * self.lr_decay) if self.lr_decay else lr
        new_sum = self._slots[i]["sum"] + ops.square(g)
        return p - _coef(clr, p.dtype) * g / (ops.sqrt(new_sum) + self.eps), {"sum": new_sum}


class Adadelta(Optimizer):
    """Adadelta (torch.optim.Adadelta): ``v = rho*v + (1-rho)*g²``,
    ``delta = sqrt(u + eps) / sqrt(v + eps) * g``, ``u = rho*u + (1-rho)*delta²``,
    ``p -= lr * delta``."""

    name = "adadelta"

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, **clip) -> None:
        super().__init__(params, lr, **clip)
        self.rho = self._hyper("rho", rho, least=0.0, most=1.0)
        self.eps = self._hyper("eps", eps, least=0.0)
        self.weight_decay = self._hyper("weight_decay", weight_decay, least=0.0)
        for i in range(len(self.params)):
            self._slot(i, "square_avg")
            self._slot(i, "acc_delta")

    def _update(self, i, p, g, lr, k):
        g = self._decayed(g, p, self.weight_decay)
        rho, eps, s = self.rho, self.eps, self._slots[i]
        v = rho * s["square_avg"] + (1.0 - rho) * ops.square(g)
        delta = ops.sqrt(s["acc_delta"] + eps) / ops.sqrt(v + eps) * g
        u = rho * s["acc_delta"] + (1.0 - rho) * ops.square(delta)
        return p - _coef(lr, p.dtype) * delta, {"square_avg": v, "acc_delta": u}


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop): ``v = alpha*v + (1-alpha)*g²``; centered subtracts the
    squared running mean of g; with momentum ``b = momentum*b + g/(sqrt(v)+eps)``,
    ``p -= lr*b``, else ``p -= lr*g/(sqrt(v)+eps)``."""

    name = "rmsprop"

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 **clip) -> None:
        super().__init__(params, lr, **clip)
        self.alpha = self._hyper("alpha", alpha, least=0.0)
        self.eps = self._hyper("eps", eps, least=0.0)
        self.weight_decay = self._hyper("weight_decay", weight_decay, least=0.0)
        self.momentum = self._hyper("momentum", momentum, least=0.0)
        self.centered = bool(centered)
        for i in range(len(self.params)):
            self._slot(i, "square_avg")
            if self.momentum:
                self._slot(i, "momentum_buffer")
            if self.centered:
                self._slot(i, "grad_avg")

    def _update(self, i, p, g, lr, k):
        g = self._decayed(g, p, self.weight_decay)
        a, s = self.alpha, self._slots[i]
        slots = {"square_avg": a * s["square_avg"] + (1.0 - a) * ops.square(g)}
        v = slots["square_avg"]
        if self.centered:
            slots["grad_avg"] = a * s["grad_avg"] + (1.0 - a) * g
            v = v - ops.square(slots["grad_avg"])
        step = g / (ops.sqrt(v) + self.eps)
        if self.momentum:
            slots["momentum_buffer"] = step = self.momentum * s["momentum_buffer"] + step
        return p - _coef(lr, p.dtype) * step, slots


class Adam(Optimizer):
    """Adam (torch.optim.Adam): ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g²``,
    ``p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)`` with t = k + 1; ``amsgrad`` uses
    the running maximum of v."""

    name = "adam"
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 **clip) -> None:
        super().__init__(params, lr, **clip)
        self.betas = self._betas(betas)
        self.eps = self._hyper("eps", eps, least=0.0)
        self.weight_decay = self._hyper("weight_decay", weight_decay, least=0.0)
        self.amsgrad = bool(amsgrad)
        for i in range(len(self.params)):
            self._slot(i, "exp_avg")
            self._slot(i, "exp_avg_sq")
            if amsgrad:
                self._slot(i, "max_exp_avg_sq")
            self._step_slot(i)

    def _update(self, i, p, g, lr, k):
        b1, b2 = self.betas
        s = self._slots[i]
        if self.decoupled:  # 1 - lr * weight_decay in float64, as PyTorch's Python floats
            p_decayed = p * _coef(1.0 - lr * self.weight_decay, p.dtype)
        else:
            g = self._decayed(g, p, self.weight_decay)
            p_decayed = p
        t = k + 1.0
        slots = {"exp_avg": b1 * s["exp_avg"] + (1.0 - b1) * g,
                 "exp_avg_sq": b2 * s["exp_avg_sq"] + (1.0 - b2) * ops.square(g)}
        v = slots["exp_avg_sq"]
        if self.amsgrad:
            slots["max_exp_avg_sq"] = v = ops.maximum(s["max_exp_avg_sq"], v)
        c1 = _coef(1.0 - b1 ** t, p.dtype)
        c2 = _coef(1.0 - b2 ** t, p.dtype)
        step = (slots["exp_avg"] / c1) / (ops.sqrt(v / c2) + self.eps)
        return p_decayed - _coef(lr, p.dtype) * step, slots


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): ``p *= 1 - lr*weight_decay``
    before the Adam step, instead of adding ``weight_decay*p`` to the gradient."""

    name = "adamw"
    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 **clip) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **clip)


class NAdam(Optimizer):
    """Adam with Nesterov momentum (torch.optim.NAdam): momentum schedule
    ``mu_t = b1*(1 - 0.5*0.96^(t*momentum_decay))``, ``mu_product`` the running product,
    ``m_hat = mu_{t+1}*m/(1 - mu_product*mu_{t+1}) + (1-mu_t)*g/(1 - mu_product)``,
    ``p -= lr * m_hat / (sqrt(v/(1-b2^t)) + eps)``."""

    name = "nadam"

    def __init__(self, params, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 **clip) -> None:
        super().__init__(params, lr, **clip)
        self.betas = self._betas(betas)
        self.eps = self._hyper("eps", eps, least=0.0)
        self.weight_decay = self._hyper("weight_decay", weight_decay, least=0.0)
        self.momentum_decay = self._hyper("momentum_decay", momentum_decay, least=0.0)
        for i in range(len(self.params)):
            self._slot(i, "exp_avg")
            self._slot(i, "exp_avg_sq")
            # the product of all mu so far; float64 as PyTorch's Python-float arithmetic
            self._slots[i]["mu_product"] = self._state[f"{i}.mu_product"] = parameter(
                f"{self.name}.{self.params[i].name}.mu_product", np.array(1.0, np.float64))
            self._step_slot(i)

    def _update(self, i, p, g, lr, k):
        b1, b2 = self.betas
        s = self._slots[i]
        g = self._decayed(g, p, self.weight_decay)
        t = k + 1.0
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1.0) * self.momentum_decay))
        mu_product = s["mu_product"] * mu
        m = b1 * s["exp_avg"] + (1.0 - b1) * g
        v = b2 * s["exp_avg_sq"] + (1.0 - b2) * ops.square(g)
        c_m = _coef(mu_next / (1.0 - mu_product * mu_next), p.dtype)
        c_g = _coef((1.0 - mu) / (1.0 - mu_product), p.dtype)
        c2 = _coef(1.0 - b2 ** t, p.dtype)
        m_hat = c_m * m + c_g * g
        step = m_hat / (ops.sqrt(v / c2) + self.eps)
        return p - _coef(lr, p.dtype) * step, {"exp_avg": m, "exp_avg_sq": v,
                                                "mu_product": mu_product}
