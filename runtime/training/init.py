"""Parameter initialisers: Glorot (Xavier) and He (Kaiming), uniform and normal, and zeros.

Each takes an explicit `rng` (an `np.random.Generator`, or an int seed) so a model's starting
point is reproducible. Fans follow the layers in `compiler.nn`: a 2-D weight is (in, out),
used as `x @ w`; a 4-D convolution kernel is (out, in, kh, kw).

>>> w = glorot_uniform(0, (784, 128))
>>> w.dtype, w.shape, bool(abs(w).max() <= np.sqrt(6 / (784 + 128)))
(dtype('float32'), (784, 128), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Rng = np.random.Generator | int


def as_rng(rng: Rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out): (in, out) for a dense weight, (in*kh*kw, out*kh*kw) for a conv."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of rank >= 2, got shape {shape}")
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def _uniform(rng: Rng, shape, limit: float, dtype) -> np.ndarray:
    return as_rng(rng).uniform(-limit, limit, size=tuple(shape)).astype(dtype)


def _normal(rng: Rng, shape, std: float, dtype) -> np.ndarray:
    return (as_rng(rng).standard_normal(tuple(shape)) * std).astype(dtype)


def glorot_uniform(rng: Rng, shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)): keeps variance through tanh layers."""
    fan_in, fan_out = fans(shape)
    return _uniform(rng, shape, np.sqrt(6.0 / (fan_in + fan_out)), dtype)


def glorot_normal(rng: Rng, shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    """N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return _normal(rng, shape, np.sqrt(2.0 / (fan_in + fan_out)), dtype)


def he_uniform(rng: Rng, shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / fan_in): keeps variance through ReLU layers."""
    return _uniform(rng, shape, np.sqrt(6.0 / fans(shape)[0]), dtype)


def he_normal(rng: Rng, shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    """N(0, 2 / fan_in)."""
    return _normal(rng, shape, np.sqrt(2.0 / fans(shape)[0]), dtype)


def normal(rng: Rng, shape: Sequence[int], std: float = 0.02, dtype=np.float32) -> np.ndarray:
    """N(0, std^2), for example embeddings."""
    return _normal(rng, shape, std, dtype)


def zeros(shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    return np.zeros(tuple(shape), dtype)


def ones(shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    return np.ones(tuple(shape), dtype)
