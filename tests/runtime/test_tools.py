"""The tools around the compiler: fit's progress bar (tqdm, or the text fallback),
History.plot() (matplotlib), fn.dot(...).render(path) (Graphviz), and the notebook views of
printouts (`_repr_html_`, `_repr_svg_`)."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest

from compiler import compile
from compiler import graphviz as G
from ir.printer import Listing
from runtime import fit, optim
from runtime.training import progress as P
from runtime.training.plots import plot_history

BACKEND = "interpreter"
RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 4)).astype(np.float32)
Y = (X @ RNG.normal(size=(4, 1))).astype(np.float32)


def loss_fn(params, x, y):
    return np.mean((x @ params["w"] - y) ** 2)


def params():
    return {"w": np.zeros((4, 1), np.float32)}


def layer(x, w):
    return np.tanh(x @ w) * 2.0


def test_fit_draws_a_tqdm_bar_per_epoch():
    pytest.importorskip("tqdm")
    assert P.tqdm is not None
    stream = io.StringIO()
    fit(loss_fn, params(), (X, Y), optim.SGD(0.05), epochs=2, batch_size=16,
        eval_data=(X, Y), stream=stream, backend=BACKEND)
    out = stream.getvalue()
    # tqdm's own layout: percentage, n/total, rate in batches/s; then our postfix
    assert "epoch 1/2: 100%" in out and "epoch 2/2: 100%" in out, out
    assert "3/3 [" in out and "batch/s" in out and "samples/s=" in out
    assert "eval loss" in out  # the epoch's summary closes its bar


def test_fit_passes_tqdm_options_and_disables_cleanly():
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    fit(loss_fn, params(), (X, Y), optim.SGD(0.05), epochs=1, batch_size=16, stream=stream,
        progress={"desc": "warm-up", "ascii": True}, backend=BACKEND)
    assert "warm-up: 100%|##########| 3/3" in stream.getvalue()
    quiet = io.StringIO()
    fit(loss_fn, params(), (X, Y), optim.SGD(0.05), epochs=1, batch_size=16, stream=quiet,
        progress=False, backend=BACKEND)
    assert quiet.getvalue() == ""


def test_fit_falls_back_to_the_text_bar_without_tqdm(monkeypatch):
    monkeypatch.setattr(P, "tqdm", None)
    stream = io.StringIO()
    fit(loss_fn, params(), (X, Y), optim.SGD(0.05), epochs=2, batch_size=16, stream=stream,
        backend=BACKEND)
    out = stream.getvalue()
    assert "\repoch 2/2 [####################] 3/3 loss" in out and "samples/s" in out
    assert isinstance(P.progress_bar(True, 1, 1), P.TextBar)


def test_history_plot_draws_loss_and_metrics_per_epoch(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    history = fit(loss_fn, params(), (X, Y), optim.SGD(0.05), epochs=3, batch_size=16,
                  eval_data=(X, Y), metrics={"mae": lambda p, x, y: np.mean(np.abs(x @ p["w"]
                                                                                 - y))},
                  progress=False, backend=BACKEND)
    path = tmp_path / "history.png"
    figure = history.plot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["loss", "eval_mae"]  # eval_loss shares the loss panel
    loss_axes = figure.axes[0]
    labels = [line.get_label() for line in loss_axes.get_lines()]
    assert labels == ["loss", "eval_loss"]
    x, y = loss_axes.get_lines()[0].get_data()
    assert list(x) == [1, 2, 3] and np.allclose(y, history["loss"])
    with pytest.raises(KeyError, match="no 'accuracy' in this history"):
        history.plot(["accuracy"])


def test_history_plot_without_matplotlib_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install 'chainjit\[plot\]'"):
        plot_history({"loss": [1.0]})


def test_printouts_show_as_html_in_notebooks():
    x, w = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    f = compile(layer, backend=BACKEND)
    text = f.ir(x, w)
    assert isinstance(text, Listing) and text.startswith("{ lambda a:f32[2,3] b:f32[3,2] .")
    html = text._repr_html_()
    assert html.startswith("<pre") and "matmul a b" in html
    assert '<span style="color:#6a737d"># test_tools.py:' in html  # the source comment, greyed
    summary = f.summary(x, w)
    assert isinstance(summary, Listing)
    assert "matmul  (2, 2) k=3" in summary._repr_html_() and "loop" in summary._repr_html_()
    graph = f.trace(x, w).graph
    assert graph._repr_html_() == Listing(str(graph))._repr_html_()


def test_html_listing_escapes_the_text():
    html = Listing("a < b & c  # why: x > 0")._repr_html_()
    assert "a &lt; b &amp; c" in html and "# why: x &gt; 0</span>" in html


def _fake_dot(tmp_path, monkeypatch) -> str:
    """A `dot` on PATH that records its arguments and writes a marker picture."""
    script = tmp_path / "bin" / "dot"
    script.parent.mkdir()
    log = tmp_path / "args.txt"
    script.write_text(f'#!/bin/sh\necho "$@" > {log}\ncat > /dev/null\nprintf "<svg>fake</svg>"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return str(log)


def test_dot_render_calls_graphviz_with_the_suffixs_format(tmp_path, monkeypatch):
    log = _fake_dot(tmp_path, monkeypatch)
    x, w = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    source = compile(layer, backend=BACKEND).dot(x, w)
    assert isinstance(source, G.DotSource) and source.startswith('digraph "layer"')
    out = source.render(tmp_path / "layer.svg")
    assert out.read_text() == "<svg>fake</svg>" and open(log).read().split() == ["-Tsvg"]
    source.render(tmp_path / "layer.picture", format="png")
    assert open(log).read().split() == ["-Tpng"]
    assert source._repr_svg_() == "<svg>fake</svg>"
    with pytest.raises(ValueError, match="name a .svg, .png"):
        source.render(tmp_path / "layer.txt")


def test_dot_render_without_graphviz_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    source = G.DotSource("digraph g { a -> b }")
    with pytest.raises(G.GraphvizNotFound, match="apt-get install graphviz"):
        source.render(tmp_path / "g.svg")
    assert source._repr_svg_() is None  # a notebook then shows the text
    assert not (tmp_path / "g.svg").exists()


@pytest.mark.skipif(G.shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_dot_render_draws_with_the_real_graphviz(tmp_path):
    x, w = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    source = compile(layer, backend=BACKEND).dot(x, w, stage="fused")
    svg = source.render(tmp_path / "layer.svg").read_text()
    assert "<svg" in svg and "matmul" in svg
    png = source.render(tmp_path / "layer.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
