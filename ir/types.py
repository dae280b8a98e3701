"""Value types of the IR: a concrete shape and a dtype, printed like ``f32[128,784]``.

Every value in a graph has one `TensorType`. Shapes are static tuples of ints; the dtype is one
of the five NumPy dtypes the compiler supports (`DTYPES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# dtype -> short name used in printouts (and the only dtypes the compiler supports).
DTYPES = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float64): "f64",
    np.dtype(np.int32): "i32",
    np.dtype(np.int64): "i64",
    np.dtype(np.bool_): "bool",
}
SHORT_DTYPES = {short: dtype for dtype, short in DTYPES.items()}


@dataclass(frozen=True)
class TensorType:
    """The static type of an IR value.

    >>> TensorType((128, 784), np.dtype("float32"))
    f32[128,784]
    >>> TensorType((), np.dtype("int64")).size
    1
    """

    shape: tuple[int, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.dtype not in DTYPES:
            raise TypeError(f"unsupported dtype {self.dtype}; chainjit supports {supported()}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"{DTYPES[self.dtype]}[{','.join(map(str, self.shape))}]"

    __str__ = __repr__


def supported() -> str:
    return ", ".join(str(d) for d in DTYPES)


def is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def is_python_scalar(x) -> bool:
    """A Python bool, int or float: weakly typed under NumPy's promotion. NumPy scalars are
    not (np.float64 subclasses float, hence the second test)."""
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def type_of(array) -> TensorType:
    """The TensorType of a NumPy array or scalar."""
    array = np.asarray(array)
    return TensorType(array.shape, array.dtype)
