"""Deterministic crash points, for tests of what a SIGKILL leaves behind.

`ARCHDSL_CRASH_AT=POINT:K` makes the process SIGKILL itself (no handler runs, no clean-up) the
K-th time it passes POINT, so a test can kill a training run at an exact step or in the middle
of an exact checkpoint write, whatever the machine's speed. Unset (always, outside tests), a
crash point costs one comparison.

Points: `step` (after optimizer step K of the run, counted across resumes: the step number),
`checkpoint` (the K-th checkpoint this process writes, after half of its bytes reached the
temporary file and before the rename that would publish it).
"""
from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("ARCHDSL_CRASH_AT", "")
_POINT, _, _AT = _SPEC.partition(":")
_HITS: dict[str, int] = {}


def due(point: str, count: int | None = None) -> bool:
    """Whether ARCHDSL_CRASH_AT names `point` and this is its K-th pass (or, with `count`, the
    pass numbered `count`). Counts the pass."""
    if _POINT != point:
        return False
    if count is None:
        count = _HITS[point] = _HITS.get(point, 0) + 1
    return str(count) == _AT


def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_point(point: str, count: int | None = None) -> None:
    """SIGKILL this process at the pass of `point` that ARCHDSL_CRASH_AT names."""
    if _POINT == point and due(point, count):
        crash()
