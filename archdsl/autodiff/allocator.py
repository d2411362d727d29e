"""Keep freed memory for the next training step (glibc's malloc only).

A training step of the NumPy engine allocates the same large arrays every step (the tape's
activations, im2col matrices, gradients) and frees them all at its end. glibc serves arrays
above its mmap threshold from fresh mappings and gives freed heap tops back to the kernel, so
every step touches fresh pages and pays a page fault per 4 KiB: measured on the digits CNN
(bench/train.md), a step took twice as long as with the memory kept, and which of the two a run
got depended on what else the process had allocated before (it flipped when PyTorch ran in the
same process). Fixed thresholds keep freed memory in the heap for the next step: the peak memory
is the same, it is just not returned to the kernel between steps.

Set ARCHDSL_MALLOC=default to leave the allocator as it is.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 256 << 20     # arrays above this still get their own mapping (and return it)
TRIM_THRESHOLD = 1 << 30       # keep up to this much free memory at the heap top
TOP_PAD = 64 << 20             # grow the heap in steps of this much

_done: list[bool] = []


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for repeated same-sized steps (once per process). Returns whether the
    allocator is tuned; False where it is not glibc or ARCHDSL_MALLOC=default."""
    if _done:
        return _done[0]
    ok = False
    if sys.platform.startswith("linux") and os.environ.get("ARCHDSL_MALLOC", "") != "default":
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                      and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                      and libc.mallopt(_M_TOP_PAD, TOP_PAD))
        except (OSError, AttributeError):      # not glibc (musl, macOS): nothing to tune
            ok = False
    _done.append(ok)
    return ok
