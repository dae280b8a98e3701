"""A picture of training: `History.plot()` draws the loss and each metric per epoch with
matplotlib (the `plot` extra), one panel per quantity; a metric evaluated on held-out data
(``eval_loss``) shares the panel of its training counterpart (``loss``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# history keys that are measurements of the machine, not of the model: not drawn by default
TIMINGS = ("epoch_time", "samples_per_sec")


def plot_history(history: Mapping[str, list], keys: Sequence[str] | None = None,
                 path: str | None = None):
    """The matplotlib Figure of `history`'s `keys` (by default every list but the timings)
    against the epoch, saved to `path` when given (tests/runtime/test_tools.py draws one)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("History.plot() draws with matplotlib, which is not installed: "
                          "pip install matplotlib (or chainjit's extra: pip install "
                          "'chainjit[plot]')") from None
    keys = list(keys) if keys is not None else [k for k in history if k not in TIMINGS]
    unknown = [k for k in keys if k not in history]
    if unknown:
        raise KeyError(f"History.plot: no {', '.join(map(repr, unknown))} in this history; it "
                       f"has {', '.join(map(repr, history))}")
    panels: dict[str, list[str]] = {}
    for key in keys:
        base = key.removeprefix("eval_").removeprefix("train_")
        panels.setdefault(base if base in keys or f"train_{base}" in keys else key, []).append(key)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (title, members) in zip(axes[0], panels.items()):
        for key in members:
            values = history[key]
            ax.plot(range(1, len(values) + 1), values, marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(members) > 1:
            ax.legend()
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure
