"""A Hessian-vector product by grad of grad, compiled, against a finite-difference estimate.

For a loss L(w), H v = ∇_w <∇_w L(w), v>: differentiate the directional derivative of the
gradient. chainjit's backward graph is ordinary IR, so `grad` of a function that itself calls
`grad` just works, eagerly or under `compile`, with no Hessian ever materialised.

    python examples/hessian_vector_product.py           # reference interpreter: ~1 s
    python examples/hessian_vector_product.py --numba   # Numba: the first run compiles
                                                        # (10-20 s), later runs load the cache
"""

from __future__ import annotations

import sys
import time

import numpy as np

from compiler import compile, grad


def loss(w, x, labels):
    """Softmax cross-entropy of a linear classifier with a tanh feature layer."""
    logits = np.tanh(x @ w[0]) @ w[1]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    logp = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.mean(logp[np.arange(x.shape[0]), labels])


def hvp(w, v, x, labels):
    """H v, as the gradient of w -> <grad L(w), v>."""

    def directional(w):
        g = grad(loss)(w, x, labels)
        return np.sum(g[0] * v[0]) + np.sum(g[1] * v[1])

    return grad(directional)(w)


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 10))
    labels = rng.integers(0, 4, 32)
    w = (rng.normal(size=(10, 8)) * 0.3, rng.normal(size=(8, 4)) * 0.3)
    v = (rng.normal(size=(10, 8)), rng.normal(size=(8, 4)))

    backend = "numba" if "--numba" in sys.argv[1:] else "interpreter"
    start = time.perf_counter()
    compiled_hvp = compile(hvp, backend=backend)
    hv = compiled_hvp(w, v, x, labels)
    elapsed = time.perf_counter() - start

    eps = 1e-5
    plus = grad(loss)((w[0] + eps * v[0], w[1] + eps * v[1]), x, labels)
    minus = grad(loss)((w[0] - eps * v[0], w[1] - eps * v[1]), x, labels)
    estimate = [(p - m) / (2 * eps) for p, m in zip(plus, minus)]

    print(f"compiled Hessian-vector product ({backend}) in {elapsed:.2f} s (trace, build, run)")
    for name, got, fd in zip(("w[0]", "w[1]"), hv, estimate):
        error = np.max(np.abs(got - fd)) / np.max(np.abs(fd))
        print(f"  H v for {name} {got.shape}: first entries {np.round(got.ravel()[:3], 6)}")
        print(f"  finite differences     : first entries {np.round(fd.ravel()[:3], 6)}")
        print(f"  max relative difference: {error:.2e}")
        assert error < 1e-5, "the Hessian-vector product disagrees with finite differences"
    eager = hvp(w, v, x, labels)
    print(f"eager and compiled agree: {all(np.allclose(a, b) for a, b in zip(eager, hv))}")


if __name__ == "__main__":
    main()
