"""Pictures of a graph: `DotSource`, the Graphviz text `Compiled.dot(...)` returns, which can
draw itself with Graphviz's `dot` program (`render(path)`) and shows as SVG in a notebook.

Graphviz is a system program, not a Python package: when `dot` is not on PATH, `render`
raises `GraphvizNotFound` saying how to get it (the text itself still works everywhere).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# what `render` writes, by the path's suffix
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".jpg": "jpg", ".jpeg": "jpg"}
INSTALL_HINT = (
    "install Graphviz, which provides the `dot` program: `apt-get install graphviz` (Debian, "
    "Ubuntu), `dnf install graphviz` (Fedora), `brew install graphviz` (macOS), `conda install "
    "graphviz` or https://graphviz.org/download/; or paste the text of .dot(...) into an online "
    "viewer such as https://dreampuf.github.io/GraphvizOnline"
)


class GraphvizNotFound(RuntimeError):
    """Graphviz's `dot` program is not on PATH."""


class DotSource(str):
    """Graphviz DOT text (a str) that can draw itself."""

    def render(self, path: str | os.PathLike, format: str | None = None) -> Path:
        """Write the picture to `path`, in the format its suffix names (.svg, .png, .pdf,
        .jpg) unless `format` is given; returns the path."""
        path = Path(path)
        format = format or FORMATS.get(path.suffix.lower())
        if format is None:
            raise ValueError(f"render({str(path)!r}): name a .svg, .png, .pdf or .jpg file, "
                             "or pass format=")
        path.write_bytes(_run_dot(self, format))
        return path

    def _repr_svg_(self) -> str | None:
        """The picture in a notebook (nothing, so the text shows, without Graphviz)."""
        if shutil.which("dot") is None:
            return None
        return _run_dot(self, "svg").decode()


def _run_dot(text: str, format: str) -> bytes:
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFound(f"drawing a graph needs Graphviz's `dot`, not found on PATH: "
                               f"{INSTALL_HINT}")
    done = subprocess.run([dot, f"-T{format}"], input=text.encode(), capture_output=True,
                          check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"dot -T{format} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout
