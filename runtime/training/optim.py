"""Optimisers (SGD, Adam, AdamW) and learning-rate schedules, written in NumPy ops that trace.

An optimiser is two pure functions: `init(params) -> state` and `update(grads, state, params)
-> (new_params, new_state)`. The state is a pytree of arrays (a step count and per-parameter
slots shaped like `params`), so `train_step` traces `update` into the same graph as the
forward and backward passes and the whole step is one compiled call. Called on NumPy arrays
the same functions run eagerly. A schedule is a function of the step count (an int64 array,
0 on the first update) returning the learning rate; it is traced with the update.

>>> import numpy as np
>>> opt = SGD(0.1)
>>> params = {"w": np.ones(2, np.float32)}
>>> new, state = opt.update({"w": np.ones(2, np.float32)}, opt.init(params), params)
>>> new["w"], int(state["count"])
(array([0.9, 0.9], dtype=float32), 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler import primitives as F
from compiler.pytree import tree_flatten, tree_map, tree_unflatten

Schedule = Callable[[Any], Any]


class StateMismatchError(ValueError):
    """A parameter (or gradient) tree that does not match the optimiser state."""


# -- learning-rate schedules: step count (int array, 0-based) -> learning rate ----------------


def _steps(count):
    return F.astype(count, np.float32)


def constant(lr: float) -> Schedule:
    """The same rate at every step."""
    return lambda count: lr


def step_decay(lr: float, boundaries: Sequence[int], factor: float = 0.1) -> Schedule:
    """lr, multiplied by `factor` at each step in `boundaries` (piecewise constant).

    >>> [float(step_decay(1.0, [2, 4], 0.5)(np.int64(t))) for t in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    def schedule(count):
        rate = lr
        for boundary in boundaries:
            rate = rate * F.where(F.greater_equal(count, boundary), factor, 1.0)
        return F.astype(rate, np.float32)

    return schedule


def cosine(lr: float, total_steps: int, final_lr: float = 0.0) -> Schedule:
    """Cosine decay from lr to final_lr over total_steps, then final_lr."""
    def schedule(count):
        progress = np.minimum(_steps(count), float(total_steps)) * (1.0 / total_steps)
        return final_lr + 0.5 * (lr - final_lr) * (1.0 + np.cos(math.pi * progress))

    return schedule


def warmup(schedule: float | Schedule, warmup_steps: int) -> Schedule:
    """Linear warm-up over the first `warmup_steps` steps into `schedule` (or a constant)."""
    inner = as_schedule(schedule)

    def scheduled(count):
        ramp = np.minimum((_steps(count) + 1.0) * (1.0 / warmup_steps), 1.0)
        return ramp * inner(count)

    return scheduled


def as_schedule(lr: float | Schedule) -> Schedule:
    return lr if callable(lr) else constant(float(lr))


# -- the optimisers ---------------------------------------------------------------------------


def _zeros_like(tree):
    return tree_map(lambda p: np.zeros(F.shape_of(p), F.result_dtype(p)), tree)


def _describe(leaves) -> str:
    return ", ".join(f"{tuple(F.shape_of(x))}" for x in leaves)


class Optimizer:
    """Base class: a learning-rate schedule, per-parameter slots and a step count."""

    slots: tuple[str, ...] = ()

    def __init__(self, lr: float | Schedule):
        self.lr = as_schedule(lr)

    def init(self, params) -> dict:
        """The initial state: {"count": int64 0, slot: zeros shaped like params, ...}."""
        leaves, _ = tree_flatten(params)
        for leaf in leaves:
            if not isinstance(leaf, np.ndarray) or leaf.dtype.kind != "f":
                raise TypeError(f"parameters must be float NumPy arrays, got {type(leaf).__name__}"
                                f"{' of ' + str(leaf.dtype) if hasattr(leaf, 'dtype') else ''}")
        state = {"count": np.zeros((), np.int64)}
        state.update({slot: _zeros_like(params) for slot in self.slots})
        return state

    def check(self, params, state, what: str = "parameters") -> None:
        """Raise StateMismatchError unless `state` was made by `init` for a tree like `params`."""
        if not isinstance(state, dict) or set(state) != {"count", *self.slots}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise StateMismatchError(
                f"{type(self).__name__} state must have keys {sorted({'count', *self.slots})}, "
                f"got {got}", )
        p_leaves, p_tree = tree_flatten(params)
        for slot in self.slots:
            s_leaves, s_tree = tree_flatten(state[slot])
            if s_tree != p_tree:
                raise StateMismatchError(
                    f"the {what} do not match the optimiser state: state[{slot!r}] has "
                    f"structure {s_tree} but the {what} have {p_tree}. Create the state with "
                    "opt.init(params) for this model (or load a matching checkpoint)")
            shapes_p = [tuple(F.shape_of(x)) for x in p_leaves]
            shapes_s = [tuple(F.shape_of(x)) for x in s_leaves]
            if shapes_p != shapes_s:
                raise StateMismatchError(
                    f"the {what} do not match the optimiser state: leaf shapes "
                    f"{_describe(p_leaves)} vs state[{slot!r}] {_describe(s_leaves)}")

    def update(self, grads, state, params):
        """One step: (new_params, new_state). Pure: no argument is modified."""
        self.check(params, state)
        p_leaves, p_tree = tree_flatten(params)
        g_leaves, g_tree = tree_flatten(grads)
        same_shapes = [F.shape_of(g) for g in g_leaves] == [F.shape_of(p) for p in p_leaves]
        if g_tree != p_tree or not same_shapes:
            raise StateMismatchError(
                f"the gradients {g_tree} {_describe(g_leaves)} do not match the parameters "
                f"{p_tree} {_describe(p_leaves)}")
        count = state["count"]
        lr = self.lr(count)
        slot_leaves = [tree_flatten(state[s])[0] for s in self.slots]
        new_params, new_slots = [], [[] for _ in self.slots]
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves)):
            g = F.astype(g, F.result_dtype(p))
            rate = lr if isinstance(lr, float) else F.astype(lr, F.result_dtype(p))
            new_p, slot_values = self.update_leaf(p, g, [s[i] for s in slot_leaves],
                                                  rate, count + 1)
            new_params.append(F.astype(new_p, F.result_dtype(p)))
            for k, value in enumerate(slot_values):
                new_slots[k].append(F.astype(value, F.result_dtype(p)))
        new_state = {"count": count + 1}
        for slot, values in zip(self.slots, new_slots):
            new_state[slot] = tree_unflatten(p_tree, values)
        return tree_unflatten(p_tree, new_params), new_state

    def update_leaf(self, p, g, slots, lr, t):
        """(new p, new slot values) for one parameter; t is the 1-based step number."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay,
    as torch.optim.SGD: g += wd p; buf = momentum buf + g; p -= lr (g + momentum buf if
    nesterov else buf)."""

    def __init__(self, lr: float | Schedule, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr)
        if nesterov and not momentum:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.slots = ("momentum",) if momentum else ()

    def update_leaf(self, p, g, slots, lr, t):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if not self.momentum:
            return p - lr * g, []
        buf = self.momentum * slots[0] + g
        direction = g + self.momentum * buf if self.nesterov else buf
        return p - lr * direction, [buf]


class Adam(Optimizer):
    """Adam with bias correction, as torch.optim.Adam (weight_decay adds wd p to the gradient).

    p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)
    """

    slots = ("m", "v")

    def __init__(self, lr: float | Schedule, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(lr)
        self.b1, self.b2, self.eps, self.weight_decay = b1, b2, eps, weight_decay

    def _moments(self, g, slots):
        m = self.b1 * slots[0] + (1.0 - self.b1) * g
        v = self.b2 * slots[1] + (1.0 - self.b2) * (g * g)
        return m, v

    def _adam_step(self, m, v, lr, t):
        steps = F.astype(t, np.float32)
        c1 = 1.0 - np.power(self.b1, steps)
        c2 = 1.0 - np.power(self.b2, steps)
        return (lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    def update_leaf(self, p, g, slots, lr, t):
        if self.weight_decay:
            g = g + self.weight_decay * p
        m, v = self._moments(g, slots)
        return p - self._adam_step(m, v, lr, t), [m, v]


class AdamW(Adam):
    """Adam with decoupled weight decay (as torch.optim.AdamW): p *= 1 - lr wd, then Adam."""

    def __init__(self, lr: float | Schedule, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(lr, b1, b2, eps)
        self.decoupled_decay = weight_decay

    def update_leaf(self, p, g, slots, lr, t):
        m, v = self._moments(g, slots)
        decayed = p * (1.0 - lr * self.decoupled_decay)
        return decayed - self._adam_step(m, v, lr, t), [m, v]
