"""Memory that is reused, not re-faulted, from one training step to the next (glibc's malloc).

A training step of the NumPy engine allocates the same large arrays every step (the tape's
activations, im2col blocks, gradients) and frees them by its end. glibc, left as it comes, serves
large arrays from fresh mappings and gives freed heap tops back to the kernel, so the next step
touches fresh pages and pays a page fault per 4 KiB: a step of the digits CNN took twice as long,
and a step of a CIFAR ResNet-18 (2.5 GB at its peak) paid 50-80k faults and up to 1.7 s of kernel
time (issue 21). Raising glibc's thresholds only moves the cliff: a step that frees more than the
trim threshold, or an array above the mmap threshold, faults again, and `mallopt` takes a C int,
so no threshold above 2 GiB exists.

So during a training run the engine asks for no thresholds at all: no array gets a mapping of its
own (M_MMAP_MAX = 0, every array comes from the heap) and the heap is never trimmed
(M_TRIM_THRESHOLD = the largest size_t). Every step then finds the previous step's memory in
malloc's free lists, whatever the step's size: zero page faults in the steady state. The cost is
bounded: the process keeps what the run's own peak step allocated (the peak RSS is the same as
without it), and when the run ends `malloc_trim(0)` returns the kept memory to the kernel and
mappings and trimming come back, at the thresholds glibc's own dynamic rule would have reached
(see AFTER_MMAP_THRESHOLD). (A buffer pool owned by the engine was the alternative: it would only cover
arrays the kernels allocate explicitly, not NumPy's temporaries, which are most of a step.)

Set ARCHDSL_MALLOC=default to leave the allocator as it is.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_NEVER = -1                            # as size_t: the largest value, so never trim
# After a run. Any mallopt turns glibc's dynamic mmap threshold off for good, so its plain
# defaults (a fixed 128 KiB threshold) would make every larger array a fresh mapping, faulted
# page by page (a ResNet-18 stage's weight gradient: 5,460 faults a call after a run, none
# before it). Instead the run leaves the thresholds where the dynamic rule settles once large
# arrays have been freed: mappings from 32 MiB (its ceiling on 64-bit), a trim above twice that.
AFTER_MMAP_THRESHOLD = 32 << 20
AFTER_TRIM_THRESHOLD = 64 << 20
DEFAULT_MMAP_MAX = 65536

_state = {"libc": None, "depth": 0, "forever": False}


def _libc():
    """glibc's handle, or None (not Linux, not glibc, or ARCHDSL_MALLOC=default)."""
    if _state["libc"] is None:
        lib = False
        if sys.platform.startswith("linux") and os.environ.get("ARCHDSL_MALLOC", "") != "default":
            try:
                cand = ctypes.CDLL("libc.so.6")
                cand.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
                cand.malloc_trim.argtypes = (ctypes.c_size_t,)
                lib = cand
            except (OSError, AttributeError):      # not glibc (musl, macOS): nothing to tune
                lib = False
        _state["libc"] = lib
    return _state["libc"] or None


def _keep(libc) -> bool:
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER))


@contextlib.contextmanager
def reused_memory():
    """Within the block, freed memory stays in the heap for the next step (nests; see the module
    docstring). Afterwards the kept memory is returned, and mappings and trimming come back at
    AFTER_MMAP_THRESHOLD and AFTER_TRIM_THRESHOLD. Yields whether the allocator is tuned."""
    libc = _libc()
    ok = libc is not None and (_state["depth"] > 0 or _keep(libc))
    _state["depth"] += ok
    try:
        yield ok
    finally:
        if ok:
            _state["depth"] -= 1
            if _state["depth"] == 0 and not _state["forever"]:
                libc.mallopt(_M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(_M_MMAP_THRESHOLD, AFTER_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, AFTER_TRIM_THRESHOLD)
                libc.malloc_trim(0)


def keep_freed_memory() -> bool:
    """reused_memory() for the rest of the process (benchmarks that time steps outside a run)."""
    libc = _libc()
    if libc is None:
        return False
    if not _state["forever"]:
        _state["forever"] = _keep(libc)
    return _state["forever"]
