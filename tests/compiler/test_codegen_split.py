"""A long driver cut into part functions (compiler/codegen/split.py) computes what the one
function did: run as plain Python (fast, every part boundary) and once through Numba."""

from __future__ import annotations

import dataclasses
import types

import numpy as np

import compiler.codegen.split as codegen_split
from compiler import compile, nn, value_and_grad
from compiler.backend import _load, build_numba
from compiler.codegen import generate
from compiler.codegen.split import PART_PREFIX, split_driver
from compiler.pipeline import lower
from ir.interpreter import evaluate
from runtime import optim, train_step

F32 = np.float32
RNG = np.random.default_rng(5)


def mlp_loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    h = nn.layer_norm(h)
    return nn.cross_entropy(h @ params["w2"] + params["b2"], y)


def mlp_args():
    params = {"w1": RNG.standard_normal((6, 8)).astype(F32), "b1": np.zeros(8, F32),
              "w2": RNG.standard_normal((8, 3)).astype(F32), "b2": np.zeros(3, F32)}
    return params, RNG.standard_normal((5, 6)).astype(F32), np.array([0, 2, 1, 1, 0])


def adam_step_graph():
    """The fused graph of an Adam training step, its generated code and its argument leaves."""
    params, x, y = mlp_args()
    step = train_step(mlp_loss, optim.Adam(1e-2))
    args = (params, step._state_for(params), x, y)
    traced = step.compiled.trace(*args)
    graph = lower(traced.graph, "fused")
    leaves = step.compiled.signature(args)[1]
    return graph, generate(graph), leaves


class _NoJit:
    """Stands in for numba in a generated module run as Python."""

    prange = range

    @staticmethod
    def njit(*args, **kwargs):
        return lambda fn: fn


def run_as_python(source: str, leaves: list, extra: tuple) -> list:
    module = types.ModuleType("generated_as_python")
    module.__dict__["numba"] = _NoJit
    exec(source.replace("import numba\n", ""), module.__dict__)
    leaves = [np.array(leaf, copy=True) if isinstance(leaf, np.ndarray) else leaf
              for leaf in leaves]
    outs = module.driver(*leaves, *[np.array(a, copy=True) for a in extra])
    return [*outs, *leaves]  # donated leaves are updated in place


def test_split_driver_leaves_short_drivers_as_one_function():
    source = compile(lambda x: np.sum(np.exp(x))).source(np.ones(4, F32))
    assert PART_PREFIX not in source


def test_split_driver_parts_compute_what_the_one_driver_does():
    graph, generated, leaves = adam_step_graph()
    extra = build_numba(graph).extra
    whole = run_as_python(generated.source, leaves, extra)
    for part_lines in (1, 3, 8):
        split = split_driver(generated.source, part_lines)
        assert split.count(f"def {PART_PREFIX}") >= 3
        for got, want in zip(run_as_python(split, leaves, extra), whole, strict=True):
            np.testing.assert_array_equal(got, want)


def test_split_driver_keeps_ir_comments_and_prologue_in_driver():
    graph, generated, _ = adam_step_graph()
    split = split_driver(generated.source, 3)
    kept = [line.strip() for line in generated.source.splitlines() if line.strip()]
    now = {line.strip() for line in split.splitlines()}
    assert all(line in now for line in kept if line.startswith("#"))
    driver = split.split("\ndef driver(")[1]
    assert "ws_f32.shape[0] <" in driver  # the workspace check stays in the driver
    assert "for i0 in" not in driver.split("return")[0]  # every loop is in a part


def test_split_driver_starts_a_part_at_a_fastmath_call():
    """A call of compiler/kernels/fastmath.py sits near its part's entry, where LLVM inlines it."""
    graph, generated, _ = adam_step_graph()
    split = split_driver(generated.source, 40)
    assert split.count(f"def {PART_PREFIX}") >= 2
    for part in split.split(f"def {PART_PREFIX}")[2:]:
        first = part.split("\n\n")[0]  # the part's first node block
        assert "_f32(" in first or "_f32(" not in part


def test_split_driver_parallel_only_on_parts_with_prange():
    body = "".join(f"\n\n    # node {k}\n    v{k} = v{k - 1} + 1.0" for k in range(1, 12))
    body += "\n\n    # node 12\n    for i0 in numba.prange(3):\n        w[i0] = v11"
    text = ("import numba\n\n@numba.njit(cache=True, parallel=True)\ndef driver(v0, w):\n"
            "    n = 1" + body + "\n\n    return (v11, )\n")
    split = split_driver(text, 2)
    decorators = [line for line in split.splitlines() if line.startswith("@")]
    assert decorators[-1] == "@numba.njit(cache=True, parallel=True)"  # the driver's own
    with_prange = [d for d in decorators[:-1] if "parallel=True" in d]
    assert len(with_prange) == 1 and all("cache=False" in d for d in decorators[:-1])


def test_split_driver_numba_parts_match_interpreter(monkeypatch):
    monkeypatch.setattr(codegen_split, "MIN_PARTS", 1)  # few parts: few compiles
    params, x, y = mlp_args()
    f = compile(value_and_grad(lambda p, x, y: mlp_loss(p, np.maximum(x, 0.0), y)))
    graph = lower(f.trace(params, x, y).graph, "fused")
    leaves = f.signature((params, x, y))[1]
    generated = generate(graph)
    split = dataclasses.replace(generated, source=split_driver(generated.source, 60))
    assert split.source.count(f"def {PART_PREFIX}") >= 3
    want = evaluate(graph, [np.array(leaf, copy=True) for leaf in leaves])
    got = _load(graph, split)([np.array(leaf, copy=True) for leaf in leaves])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)
