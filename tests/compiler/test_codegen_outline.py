"""Outlining (compiler/codegen/outline.py): each node block that does work is a kernel module of its
own, named by a hash of a text that holds nothing of the model, called by the driver through
runtime/execution/linking.py. Checked: the outlined module computes what the interpreter does (as
plain Python, through every kernel boundary, and compiled), kernels are shared within and between
models, IR comments stay in the driver."""

from __future__ import annotations

import types

import numpy as np

from compiler import compile, nn, value_and_grad
from compiler.backend import build_numba
from compiler.codegen import generate
from compiler.pipeline import lower
from ir.interpreter import evaluate
from runtime import optim, train_step
from tests.compiler.listing import kernel_texts

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
    return graph, generate(graph, traced.donate, 0), leaves


class _NoJit:
    """Stands in for numba in a generated module run as Python."""

    prange = range

    @staticmethod
    def njit(*args, **kwargs):
        return lambda fn: fn


def _as_python(text: str, name: str, namespace: dict) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(namespace, numba=_NoJit)
    exec(text.replace("import numba\n", ""), module.__dict__)
    return module


def run_as_python(generated, leaves: list, extra: tuple) -> list:
    """The driver and its kernels as plain Python: each kernel call runs the kernel's
    function, so every value that crosses a kernel boundary is checked."""
    kernels = {name: _as_python(text, name, {}).kernel
               for name, text in generated.kernels.items()}
    callers = {f"kern_{name.removeprefix('chainjit_k_')[:10]}": fn
               for name, fn in kernels.items()}
    driver_text = "\n".join(line for line in generated.source.splitlines()
                            if "kernel_call" not in line)
    module = _as_python(driver_text, "driver_as_python", callers)
    leaves = [np.array(leaf, copy=True) if isinstance(leaf, np.ndarray) else leaf
              for leaf in leaves]
    args = [np.array(leaf) if i in generated.refs else leaf for i, leaf in enumerate(leaves)]
    outs = module.driver(*args, *[np.array(a, copy=True) for a in extra])
    return list(outs)


def test_outlined_driver_as_python_computes_what_the_interpreter_does():
    graph, generated, leaves = adam_step_graph()
    assert len(generated.kernels) >= 5
    extra = build_numba(graph, generated.donation and {o: i for o, (i, _) in
                                                       generated.donation.items()}, 0).extra
    got = run_as_python(generated, leaves, extra)
    want = evaluate(graph, [np.array(leaf, copy=True) for leaf in leaves])
    returned = [want[i] for i in generated.returned]
    assert len(got) == len(returned)
    for g, w in zip(got, returned, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)


def test_outlined_driver_keeps_ir_comments_and_only_glue():
    _, generated, _ = adam_step_graph()
    driver = generated.source.split("\ndef driver(")[1]
    assert "ws_f32_s0 <" in driver or "ws_f32.shape[0] <" in driver  # the workspace check
    assert "for i0 in" not in driver  # every loop is in a kernel
    assert any("vjp " in line for line in driver.splitlines() if line.lstrip().startswith("#"))
    for text in generated.kernels.values():
        assert "\n    #" not in text.split("def kernel(")[1].replace("# in place", "")


def test_kernels_are_shared_between_layers_and_models():
    """Two dense tanh layers of different widths use one kernel (sizes are arguments), and a
    second model with other names and shapes finds the same kernel modules."""
    def two_layers(x, w1, b1, w2, b2):
        return np.tanh(np.tanh(x @ w1 + b1) @ w2 + b2)

    def other_model(inputs, weight, bias):
        return np.tanh(inputs @ weight + bias)

    a = [RNG.standard_normal(s).astype(F32) for s in ((4, 3), (3, 5), (5,), (5, 2), (2,))]
    b = [RNG.standard_normal(s).astype(F32) for s in ((7, 6), (6, 9), (9,))]
    first = compile(two_layers)
    listing = first.source(*a)
    calls = generate(first.lowered(first.trace(*a), "fused")).source.count("kern_")
    assert len(kernel_texts(listing)) < calls - 1  # fewer kernels than calls: shared
    second = compile(other_model)
    shared = set(kernel_texts(second.source(*b))) & set(kernel_texts(listing))
    assert len(shared) >= 2  # the matmul and the bias + tanh kernel
    for f, args in ((first, a), (second, b)):
        want = compile(f.fn, backend="interpreter")(*args)
        np.testing.assert_allclose(f(*args), want, rtol=1e-5, atol=1e-6)


def test_outlined_numba_build_matches_interpreter():
    params, x, y = mlp_args()
    f = compile(value_and_grad(lambda p, x, y: mlp_loss(p, np.maximum(x, 0.0), y)))
    graph = lower(f.trace(params, x, y).graph, "fused")
    leaves = f.signature((params, x, y))[1]
    want = evaluate(graph, [np.array(leaf, copy=True) for leaf in leaves])
    got = build_numba(graph)([np.array(leaf, copy=True) for leaf in leaves])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)


class _Compiles:
    """Counts Numba compiles (each function compiled or loaded through the compiler)."""

    def __init__(self):
        from numba.core import event

        counter = self

        class Listener(event.Listener):
            def on_start(self, e):
                pass

            def on_end(self, e):
                counter.count += 1
                dispatcher = e.data.get("dispatcher") if isinstance(e.data, dict) else None
                module = getattr(getattr(dispatcher, "py_func", None), "__module__", "")
                counter.modules.append(module)

        self.count = 0
        self.modules: list[str] = []
        self.listener = Listener()
        self.event = event

    def __enter__(self):
        self.event.register("numba:compile", self.listener)
        return self

    def __exit__(self, *exc):
        self.event.unregister("numba:compile", self.listener)


def test_a_new_batch_size_compiles_nothing():
    """`z[np.arange(n), y]` (a gather over the flattened batch x classes) once baked n * C
    into the code as a literal: a new batch size compiled again."""
    def loss(p, x, y):
        z = np.maximum(x @ p["w"], 0.0) @ p["v"]
        logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
        return -np.mean(logp[np.arange(z.shape[0]), y])

    params = {"w": RNG.standard_normal((7, 6)).astype(F32),
              "v": RNG.standard_normal((6, 5)).astype(F32)}
    step = train_step(loss, optim.SGD(0.1))
    for batch in (24, 18):
        x = RNG.standard_normal((batch, 7)).astype(F32)
        y = RNG.integers(0, 5, batch)
        with _Compiles() as compiles:
            step(params, x, y)
        if batch == 18:
            assert compiles.count == 0
