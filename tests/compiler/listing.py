"""Reading a generated listing in tests: the driver module, then each kernel module it calls
(compiler/codegen/outline.py, `Generated.listing`)."""

from __future__ import annotations

import re


def kernel_texts(listing: str) -> dict[str, str]:
    """caller name in the driver (`kern_<hash>`) -> that kernel module's text."""
    parts = re.split(r"\n# ---- kernel module \w+: the driver's (kern_\w+) ----\n", listing)
    return dict(zip(parts[1::2], parts[2::2]))


def expanded(listing: str) -> str:
    """The driver with each kernel call followed by the called kernel's body (once per call,
    so a kernel called for two nodes counts twice)."""
    kernels = kernel_texts(listing)
    driver = re.split(r"\n# ---- kernel module ", listing, maxsplit=1)[0]
    out = []
    for line in driver.split("\n"):
        out.append(line)
        for caller in re.findall(r"\b(kern_\w+)\(", line):
            if caller in kernels:
                out.append(kernels[caller].split("\ndef kernel(", 1)[1])
    return "\n".join(out)
