"""np.einsum lowered to primitives: `...` becomes letters of its own (broadcast between
operands), a repeated index within a term reads that diagonal (a GATHER), each operand's
private indices are summed out, then pairs of operands (left to right, any number) are
contracted by one batched MATMUL (batch, free-left, contracted) x (batch, contracted,
free-right), and the result is transposed into the output order."""

from __future__ import annotations

import string

import numpy as np

from compiler import primitives as F
from compiler.errors import UnsupportedError


def parse(subscripts: str, count: int, ndims=None) -> tuple[list[str], str]:
    """Terms and output letters; `...` becomes letters of their own (ndims: the operands'
    ranks, needed when there is an ellipsis)."""
    subscripts = subscripts.replace(" ", "")
    if "->" in subscripts:
        lhs, out = subscripts.split("->")
    else:
        lhs, out = subscripts, None
    terms = lhs.split(",")
    if len(terms) != count:
        raise UnsupportedError(f"einsum '{subscripts}' names {len(terms)} operands, got {count}")
    if "." in subscripts:
        terms, out = _expand_ellipsis(subscripts, terms, out, ndims)
    if out is None:
        letters = "".join(terms)
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    for c in out:
        if c not in "".join(terms):
            raise UnsupportedError(f"einsum output index '{c}' appears in no operand")
    if len(set(out)) != len(out):
        raise UnsupportedError(f"einsum output '{out}' repeats an index")
    return terms, out


def _expand_ellipsis(subscripts, terms, out, ndims):
    used = set(subscripts)
    spare = [c for c in string.ascii_letters if c not in used]
    counts = []
    for term, ndim in zip(terms, ndims):
        if term.count("...") > 1 or term.replace("...", "").count("."):
            raise UnsupportedError(f"einsum term '{term}' has a malformed ellipsis")
        counts.append(ndim - len(term.replace("...", "")) if "..." in term else 0)
    width = max(counts)
    ellipsis = "".join(spare[:width])
    terms = [t.replace("...", ellipsis[width - k:]) for t, k in zip(terms, counts)]
    if out is None:
        letters = "".join(t for t in terms)
        rest = sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ellipsis)
        return terms, ellipsis + "".join(rest)
    return terms, out.replace("...", ellipsis)


def einsum(subscripts: str, *operands, optimize=False, dtype=None, out=None, casting="safe"):
    if out is not None:
        raise UnsupportedError("einsum(..., out=...) writes in place", fix="drop out=")
    terms, out_term = parse(subscripts, len(operands), [len(F.shape_of(x)) for x in operands])
    for term, x in zip(terms, operands):
        if len(term) != F.shape_of(x).__len__():
            raise UnsupportedError(f"einsum term '{term}' does not match an operand of rank "
                                   f"{len(F.shape_of(x))}")
    operands = [_diagonals(x, t) for x, t in zip(operands, terms)]
    terms = [t for _, t in operands]
    operands = _broadcast_sizes([x for x, _ in operands], terms)
    while len(operands) > 1:
        keep = set(out_term).union(*terms[2:])
        a, b = operands.pop(0), operands.pop(0)
        ta, tb = terms.pop(0), terms.pop(0)
        result, term = _contract(a, ta, b, tb, keep)
        operands.insert(0, result)
        terms.insert(0, term)
    x, term = _sum_private(operands[0], terms[0], set(out_term))
    result = F.transpose(x, [term.index(c) for c in out_term])
    return F.astype(result, dtype) if dtype is not None else result


def _diagonals(x, term: str):
    """A term that repeats an index ('ii', 'iij') reads a diagonal: one axis per letter."""
    while len(set(term)) != len(term):
        c = next(c for c in term if term.count(c) > 1)
        i = term.index(c)
        j = term.index(c, i + 1)
        shape = F.shape_of(x)
        if shape[i] != shape[j]:
            raise UnsupportedError(f"einsum index '{c}' has two different sizes")
        rest = [k for k in range(len(term)) if k not in (i, j)]
        n = shape[i]
        flat = F.reshape(F.transpose(x, rest + [i, j]), [shape[k] for k in rest] + [n * n])
        x = F.gather(flat, np.arange(n, dtype=np.int64) * (n + 1), len(rest))
        term = "".join(term[k] for k in rest) + c
    return x, term


def _broadcast_sizes(operands, terms):
    """Indices of size 1 in one operand and n in another (broadcast ellipsis dims) grow to n."""
    size: dict[str, int] = {}
    for x, t in zip(operands, terms):
        for c, d in zip(t, F.shape_of(x)):
            size[c] = max(size.get(c, 1), d)
    return [F.broadcast_to(x, [size[c] for c in t]) for x, t in zip(operands, terms)]


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
