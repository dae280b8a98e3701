"""The contract between a generated driver (compiler/codegen) and the executable that calls it
(runtime/execution/executable.py), as enums: what each extra driver argument is, and how each
donated output reaches the input array it updates. Both are str Enums, equal to (and hashed as)
their names in lower case, so printouts and older comparisons read the same.
"""

from __future__ import annotations

from enum import Enum


class ArgKind(str, Enum):
    """One driver argument after the graph inputs (codegen's `ArgSpec.kind`)."""

    CONST = "const"  # an array constant
    PACK = "pack"  # the 0-d constants of one dtype, packed in one array
    WORKSPACE = "workspace"  # the flat array of one dtype the work buffers are carved from
    BUFFER = "buffer"  # a work buffer whose size the driver cannot compute at its start

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# argument kinds the executable allocates empty (the others carry a value)
ALLOCATED = frozenset({ArgKind.WORKSPACE, ArgKind.BUFFER})


class DonationMode(str, Enum):
    """How a donated output becomes its input's array (`Generated.donation`)."""

    SAME = "same"  # the output is the input itself
    DIRECT = "direct"  # written in place by the kernel that computes it
    DEFERRED = "deferred"  # computed elsewhere, copied in at the driver's end
    PYTHON = "python"  # returned, and copied into the input by the executable

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)
