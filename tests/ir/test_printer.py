"""Golden printouts: the text a user reads is pinned, character for character."""

import os

import numpy as np

from compiler import compile, grad, scan, while_loop
from ir.printer import to_dot, var_name

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def mlp_loss(params, x, y):
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    logits = h @ params["w2"] + params["b2"]
    m = np.max(logits, axis=1, keepdims=True)
    logp = logits - m - np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True))
    return -np.mean(logp[np.arange(x.shape[0]), y])


def mlp_args():
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.normal(size=(6, 5)).astype(np.float32), "b1": np.zeros(5, np.float32),
        "w2": rng.normal(size=(5, 3)).astype(np.float32), "b2": np.zeros(3, np.float32),
    }
    x = rng.normal(size=(4, 6)).astype(np.float32)
    y = np.array([0, 2, 1, 2])
    return params, x, y


def check_golden(name: str, text: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("CHAINJIT_UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(text + "\n")
    with open(path) as f:
        expected = f.read().rstrip("\n")
    hint = "printout changed; if intended, rerun with CHAINJIT_UPDATE_GOLDEN=1"
    assert text == expected, f"{hint}\n{text}"


def test_var_names_are_deterministic():
    assert [var_name(i) for i in (0, 25, 26, 27, 675, 676)] == ["a", "z", "ba", "bb", "zz", "baa"]


def test_mlp_traced_printout_golden():
    check_golden("mlp_traced.txt", compile(mlp_loss).ir(*mlp_args(), stage="traced"))


def test_mlp_trace_evaluates_like_numpy():
    args = mlp_args()
    expected = mlp_loss(*args)
    got = compile(mlp_loss, backend="interpreter")(*args)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_dot_export_lists_every_node():
    args = mlp_args()
    traced = compile(mlp_loss).trace(*args)
    dot = to_dot(traced.graph, "mlp")
    assert dot.startswith('digraph "mlp"') and dot.rstrip().endswith("}")
    assert dot.count("shape=box") == len(traced.graph.nodes)
    assert "matmul" in dot and "test_printer.py" in dot


def rnn_loss(w, xs, h0):
    def step(h, x):
        h = np.tanh(h @ w + x)
        return h, np.sum(h)

    h, ys = scan(step, h0, xs)
    return np.sum(ys) + np.sum(while_loop(lambda c: np.sum(c) < 1.0, lambda c: c + 0.5, h))


def test_loop_printout_golden():
    """A loop node prints its body indented under it (a while: its cond, then its body); the
    joint graph shows the forward scan saving its carries and the reverse scan of its VJP."""
    w, xs, h0 = np.ones((2, 2), np.float32), np.ones((3, 1, 2), np.float32), np.zeros((1, 2),
                                                                                    np.float32)
    check_golden("loops_traced.txt", compile(rnn_loss).ir(w, xs, h0, stage="traced"))
    joint = compile(grad(lambda w, xs, h0: np.sum(scan(
        lambda h, x: (np.tanh(h @ w + x), None), h0, xs)[0])))
    check_golden("scan_joint.txt", joint.ir(w, xs, h0, stage="joint"))


def test_dot_fills_backward_nodes_and_only_them():
    # imported here: lines added at the top would move the golden printout's source lines
    from compiler import value_and_grad
    from ir.graph import Role
    from ir.printer import ROLE_FILLS

    graph = compile(value_and_grad(mlp_loss)).trace(*mlp_args()).graph
    dot = to_dot(graph, "mlp")
    backward = sum(n.role is Role.BACKWARD for n in graph.nodes)
    assert 0 < backward < len(graph.nodes)
    assert dot.count(f'fillcolor="{ROLE_FILLS["backward"]}"') == backward
    assert "fillcolor" not in to_dot(compile(mlp_loss).trace(*mlp_args()).graph)
