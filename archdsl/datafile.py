"""Reading `.npy` and `.npz` files (data, checkpoints, inputs, vocabularies) without surprises.

    arrays = read_arrays("data.npz", "data")        # name -> np.ndarray (an .npz)
    x = read_arrays("batch.npy", "input 'image'")   # np.ndarray (an .npy)

- Only regular files are opened (fileio.open_input): a FIFO or a device is refused at once.
- The format is told by the file's first bytes, not its name: an .npy header, a zip archive
  (an .npz), or else an error that says what the file looks like (text, a pickle, something else).
- Nothing is ever unpickled: an object array is refused from its header, before it is read.
- Every array's declared size (its header's shape x dtype) is checked against the memory limit
  (passes/limits.py: ARCHDSL_MEMORY_LIMIT, the machine, the container, `ulimit -v`) before a
  byte of it is read, summed over the arrays of an archive, and against the bytes the file (or
  the zip member) really holds: a 2 KB file that declares 10^12 x 64 floats, or a zip bomb, is
  an ArchError, never an allocation of terabytes.
- A truncated or damaged file is an ArchError that says so.
"""
from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npformat

from .errors import ArchError
from .fileio import open_input

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")       # a zip's first entry, or an empty zip


def _limit() -> tuple[int | None, str]:
    from .passes.limits import default_limit
    return default_limit()


def _header(fp) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, header length) of the .npy stream `fp` positioned at its start."""
    version = npformat.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = npformat.read_array_header_1_0(fp)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = npformat.read_array_header_2_0(fp)
    else:
        raise ValueError(f"unknown .npy format version {version}")
    return tuple(int(d) for d in shape), np.dtype(dtype), fp.tell()


def _declared(shape: tuple, dtype: np.dtype) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * dtype.itemsize


def _human(n: int) -> str:
    from .passes.limits import human_bytes
    return human_bytes(n)


class _Budget:
    """The memory limit, spent array by array."""

    def __init__(self, path: str, what: str, limit: tuple[int | None, str] | None):
        self.path, self.what = path, what
        self.limit, self.source = limit if limit is not None else _limit()
        self.spent = 0

    def spend(self, name: str | None, shape: tuple, dtype: np.dtype, available: int) -> None:
        """Check one array's declared size (against the limit and the `available` bytes that hold it)."""
        where = f"{self.what} '{self.path}'" + (f": array '{name}'" if name is not None else "")
        if dtype.hasobject:
            raise ArchError(f"{where} holds Python objects (pickled), which archdsl never unpickles",
                            hint="store plain numbers: np.asarray(values, dtype=np.float32)")
        size = _declared(shape, dtype)
        declared = f"shape {list(shape)} of {dtype.name} ({_human(size)})"
        if self.limit is not None and self.spent + size > self.limit:
            before = f", after {_human(self.spent)} of other arrays" if self.spent else ""
            raise ArchError(f"{where} declares {declared}{before}, more than the memory limit of "
                            f"{_human(self.limit)} ({self.source})",
                            hint="is the file damaged? If the data is meant to be this large, raise "
                                 "ARCHDSL_MEMORY_LIMIT on a machine with the memory")
        if size > available:
            raise ArchError(f"{where} declares {declared} but the file holds only {_human(max(0, available))} "
                            "of it: it is truncated or corrupt")
        self.spent += size


def _what_it_looks_like(head: bytes) -> str:
    if not head:
        return "the file is empty"
    if head[:1] == b"\x80":
        return "it holds a Python pickle, which archdsl never loads"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "it is neither an .npy array nor an .npz archive"
    if all(c.isprintable() or c.isspace() for c in text):
        return "it is a text file, not an .npy array or an .npz archive"
    return "it is neither an .npy array nor an .npz archive"


def read_arrays(path, what: str = "data", *, limit: tuple[int | None, str] | None = None):
    """The array of an .npy file, or the arrays (name -> array, in file order) of an .npz file.

    `what` names the file in errors ("data", "checkpoint", "input 'image'"); `limit` replaces the
    memory limit: (bytes or None, where it comes from)."""
    p = os.fspath(path)
    with open_input(p, what) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        fh.seek(0)
        budget = _Budget(p, what, limit)
        if head.startswith(NPY_MAGIC):
            return _read_npy(fh, budget, size)
        if head[:4] in ZIP_MAGICS:
            return _read_npz(fh, budget)
        raise ArchError(f"{what} '{p}' is not an .npy or .npz file: {_what_it_looks_like(fh.read(512))}",
                        hint="save arrays with np.save (.npy) or np.savez (.npz)")


def _corrupt(budget: _Budget, e: BaseException, kind: str, member: str | None = None) -> ArchError:
    where = f"{budget.what} '{budget.path}'"
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    reason = f"array '{member}': {reason}" if member else reason
    return ArchError(f"{where} is not a readable {kind} (truncated or corrupt?): {reason}",
                     hint="write the file again (np.save / np.savez, or the archdsl command that made it)")


def _read_npy(fh, budget: _Budget, size: int) -> np.ndarray:
    try:
        shape, dtype, start = _header(fh)
        budget.spend(None, shape, dtype, size - start)
        fh.seek(0)
        return npformat.read_array(fh, allow_pickle=False)
    except ArchError:
        raise
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, OverflowError) as e:
        raise _corrupt(budget, e, ".npy file") from None


def _read_npz(fh, budget: _Budget) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    member = None
    try:
        with zipfile.ZipFile(fh) as z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                member = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with z.open(info) as m:
                    shape, dtype, start = _header(m)
                budget.spend(member, shape, dtype, info.file_size - start)
                with z.open(info) as m:
                    out[member] = npformat.read_array(m, allow_pickle=False)
    except ArchError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, ValueError, OSError, EOFError, KeyError,
            SyntaxError, TypeError, OverflowError, NotImplementedError, RuntimeError) as e:
        raise _corrupt(budget, e, ".npz archive", member) from None
    return out
