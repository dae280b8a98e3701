"""np.einsum lowered to primitives: each operand's private indices are summed out, then pairs
of operands are contracted by one batched MATMUL (batch, free-left, contracted) x
(batch, contracted, free-right), and the result is transposed into the output order."""

from __future__ import annotations

import numpy as np

from compiler import frontend as F
from compiler.errors import UnsupportedError


def parse(subscripts: str, count: int) -> tuple[list[str], str]:
    subscripts = subscripts.replace(" ", "")
    if "." in subscripts:
        raise UnsupportedError("einsum with '...' is not supported",
                               fix="write the batch axes out as letters")
    if "->" in subscripts:
        lhs, out = subscripts.split("->")
    else:
        lhs = subscripts
        letters = lhs.replace(",", "")
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    terms = lhs.split(",")
    if len(terms) != count:
        raise UnsupportedError(f"einsum '{subscripts}' names {len(terms)} operands, got {count}")
    for term in terms:
        if len(set(term)) != len(term):
            raise UnsupportedError(f"einsum term '{term}' repeats an index (diagonals)")
    return terms, out


def einsum(subscripts: str, *operands):
    terms, out = parse(subscripts, len(operands))
    for term, x in zip(terms, operands):
        if len(term) != F.shape_of(x).__len__():
            raise UnsupportedError(f"einsum term '{term}' does not match an operand of rank "
                                   f"{len(F.shape_of(x))}")
    terms, operands = list(terms), list(operands)
    while len(operands) > 1:
        keep = set(out).union(*terms[2:])
        a, b = operands.pop(0), operands.pop(0)
        ta, tb = terms.pop(0), terms.pop(0)
        result, term = _contract(a, ta, b, tb, keep)
        operands.insert(0, result)
        terms.insert(0, term)
    x, term = _sum_private(operands[0], terms[0], set(out))
    return F.transpose(x, [term.index(c) for c in out])


def _sum_private(x, term: str, keep: set[str]):
    axes = [k for k, c in enumerate(term) if c not in keep]
    return F.reduce_sum(x, axes), "".join(c for c in term if c in keep)


def _contract(a, ta: str, b, tb: str, keep: set[str]):
    a, ta = _sum_private(a, ta, keep | set(tb))
    b, tb = _sum_private(b, tb, keep | set(ta))
    batch = [c for c in ta if c in tb and c in keep]
    contracted = [c for c in ta if c in tb and c not in keep]
    free_a = [c for c in ta if c not in tb]
    free_b = [c for c in tb if c not in ta]
    size = dict(zip(ta, F.shape_of(a))) | dict(zip(tb, F.shape_of(b)))
    for c in set(ta) & set(tb):
        if dict(zip(ta, F.shape_of(a)))[c] != dict(zip(tb, F.shape_of(b)))[c]:
            raise UnsupportedError(f"einsum index '{c}' has two different sizes")

    def n(letters):
        return int(np.prod([size[c] for c in letters], dtype=np.int64))

    dtype = F.result_dtype(a, b)
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    a = F.astype(F.transpose(a, [ta.index(c) for c in batch + free_a + contracted]), dtype)
    b = F.astype(F.transpose(b, [tb.index(c) for c in batch + contracted + free_b]), dtype)
    lead = (n(batch),) if batch else ()
    a = F.reshape(a, lead + (n(free_a), n(contracted)))
    b = F.reshape(b, lead + (n(contracted), n(free_b)))
    result = F.matmul_primitive(a, b)
    term = "".join(batch + free_a + free_b)
    return F.reshape(result, tuple(size[c] for c in term)), term
