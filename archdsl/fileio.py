"""Atomic file output: every file archdsl writes goes through here.

A file is written to a temporary sibling in the same directory (same filesystem, so the final
`os.replace` is atomic) and renamed over the target only when writing succeeded. An interrupted
or failing command therefore leaves either the old file or the new one, never a partial one.

The temporary name keeps the target's extension (`.model.k3j2.tmp.onnx`), because some writers
look at it: `np.savez` appends `.npz` to names that lack it, image writers pick a format by it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import ArchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure remove it.

        with atomic_path("model.onnx") as tmp:
            onnx.save(proto, tmp)

    The temporary file exists (empty) when the body starts. Mode of the final file: the old
    file's mode when replacing one, else the usual 0o666 minus the umask.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    suffix = "".join(target.suffixes[-1:])
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.stem}.", suffix=f".tmp{suffix}")
    except OSError as e:
        raise ArchError(f"cannot write '{target}': {e.strerror or e}",
                        hint=None if directory.is_dir() else f"the directory '{directory}' does not exist")
    os.close(fd)
    try:
        yield tmp
        try:
            mode = os.stat(target).st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_umask()
        try:
            os.chmod(tmp, mode)
            _fsync(tmp)
            os.replace(tmp, target)
        except OSError as e:
            raise ArchError(f"cannot write '{target}': {e.strerror or e}") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (str is written as UTF-8) to `path` atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
