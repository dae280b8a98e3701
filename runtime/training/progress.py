"""`fit`'s progress bar: tqdm's when it is installed (the `progress` extra: a bar per epoch
with rate and ETA, a widget in notebooks, nests under a caller's bars), else a one-line text
bar of our own. Both take the same calls: `update` after each batch and `end_epoch`.

`fit(progress=...)`: True (a bar), False (none), or a dict of tqdm options (`leave`,
`position`, `ncols`, `mininterval`, ...) for the tqdm bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any

try:
    from tqdm.auto import tqdm
except ImportError:  # the `progress` extra is not installed: TextBar draws instead
    tqdm = None


def progress_bar(progress: bool | dict, epochs: int, batches: int, stream=None):
    """The bar `fit` draws with: a TqdmBar when tqdm is installed, else a TextBar."""
    if tqdm is not None:
        return TqdmBar(progress, epochs, batches, stream)
    return TextBar(bool(progress), epochs, batches, stream)


class TqdmBar:
    """One tqdm bar per epoch, ``epoch 2/5: 100%|####| 31/31 [00:01, 25.1batch/s,
    loss=0.4210, samples/s=803]``, closed with the epoch's summary (time, evaluation)."""

    def __init__(self, progress: bool | dict, epochs: int, batches: int, stream=None):
        self.enabled = bool(progress)
        self.epochs, self.batches = epochs, batches
        self.options: dict[str, Any] = {"file": stream or sys.stderr, "unit": "batch",
                                        "leave": True, "dynamic_ncols": True}
        if isinstance(progress, dict):
            self.options.update(progress)
        self.bar = None

    def update(self, epoch: int, batch: int, loss: float, rate: float, force: bool = False):
        if not self.enabled:
            return
        if self.bar is None:
            options = {"desc": f"epoch {epoch + 1}/{self.epochs}", **self.options}
            self.bar = tqdm(total=self.batches, **options)
        self.bar.set_postfix_str(f"loss={loss:.4f}, samples/s={rate:,.0f}", refresh=False)
        self.bar.update(batch - self.bar.n)
        if force:
            self.bar.refresh()

    def end_epoch(self, summary: str):
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.bar.postfix}, {summary}", refresh=False)
            self.bar.close()
            self.bar = None


class TextBar:
    """A one-line progress bar on stderr, redrawn with \\r at most every 0.1 s (the fallback
    without tqdm)."""

    def __init__(self, enabled: bool, epochs: int, batches: int, stream=None):
        self.enabled, self.epochs, self.batches = enabled, epochs, batches
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.last = 0.0

    def update(self, epoch: int, batch: int, loss: float, rate: float, force: bool = False):
        now = time.perf_counter()
        # Off a terminal (a log file, CI) only the end-of-epoch line is drawn.
        if not self.enabled or (not force and (now - self.last < 0.1 or not self.tty)):
            return
        self.last = now
        filled = int(20 * batch / self.batches)
        bar = "#" * filled + "." * (20 - filled)
        self.stream.write(f"\repoch {epoch + 1}/{self.epochs} [{bar}] {batch}/{self.batches} "
                          f"loss {loss:.4f}  {rate:,.0f} samples/s ")
        self.stream.flush()

    def end_epoch(self, summary: str):
        if self.enabled:
            self.stream.write(f" {summary}\n")
            self.stream.flush()
