"""Every file archdsl writes, and every data file it opens, goes through here.

Writing (`atomic_path`, `atomic_write`):

- A regular file is written to a temporary sibling in the same directory (same filesystem, so
  the final `os.replace` is atomic) and renamed over the target only when writing succeeded. An
  interrupted or failing command therefore leaves either the old file or the new one, never a
  partial one. A symlink stays a symlink: the file it points to is replaced.
- Anything that is not a regular file is never renamed over or deleted. A pipe (with a reader),
  a character device (`/dev/null`, a terminal) and the paths that stand for open descriptors
  (`/dev/stdout`, `/proc/self/fd/N`) are written through: the bytes are produced in a temporary
  file elsewhere and then copied into the target. A directory, a socket, a block device or a pipe
  without a reader is refused, and so is a new file in /dev or under /proc.
- A full disk, a quota, a read-only filesystem or a file-size limit is an ArchError that names
  the file (the old file is unchanged), never a traceback.

The temporary name keeps the target's extension (`.model.k3j2.tmp.onnx`), because some writers
look at it: `np.savez` appends `.npz` to names that lack it, image writers pick a format by it.

Reading (`open_input`, `check_input`): data, weights and model files are read only from regular
files. A FIFO is opened without blocking and refused, so a pipe given as `--data` cannot hang a
command; a device (`/dev/zero`) is refused before a byte is read.

`refuse_overwriting_inputs(output, inputs)` refuses an output path that is one of a command's
input files (compared as resolved paths and as inodes, so hard links and symlinks count).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .errors import ArchError

# Errors of the storage rather than of archdsl: reported as "cannot write", never a traceback.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.EPIPE}
MAX_LINKS = 40                          # as the kernel's limit on a chain of symlinks


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str) -> None:
    """Flush the file to the disk before it is published: a full disk may only show here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):     # fsync unsupported here
            raise
    finally:
        os.close(fd)


def write_error(target, e: OSError, existed: bool = False) -> ArchError:
    """The ArchError for an OSError met while writing `target`."""
    where = Path(target).parent if str(Path(target).parent) else Path(".")
    reason = e.strerror or str(e)
    hint = {errno.ENOSPC: f"free some space on the disk that holds '{where}', or write somewhere else",
            errno.EDQUOT: f"the disk quota for '{where}' is used up: free some space or write somewhere else",
            errno.EFBIG: "the file is larger than this filesystem or `ulimit -f` allows",
            errno.EROFS: "the filesystem is read-only: write somewhere else",
            errno.EACCES: f"check the permissions of '{where}'",
            errno.EPERM: f"check the permissions of '{where}'",
            errno.EPIPE: "the program reading the output stopped before it ended"}.get(e.errno)
    if existed:
        hint = f"{hint}; the old file is unchanged" if hint else "the old file is unchanged"
    return ArchError(f"cannot write '{target}': {reason}", hint=hint)


def _descriptor(path: str) -> bool:
    """Whether `path` stands for an open descriptor (`/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`):
    on the way from it to its target, a link leads under /proc."""
    p = os.path.abspath(path)
    for _ in range(MAX_LINKS):
        p = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
        if p.startswith("/proc/"):
            return True
        try:
            link = os.readlink(p)
        except OSError:
            return False
        p = os.path.join(os.path.dirname(p), link)
    return False


def _in_system_dir(path: str) -> bool:
    """Whether the real directory of `path` is /dev itself or under /proc: never a place for a
    temporary file or a new one (/dev/shm and the like are ordinary directories)."""
    d = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    return d == "/dev" or (d + "/").startswith("/proc/")


def _plan(path: str | os.PathLike) -> tuple[str, str]:
    """(how, where): ("replace", the real file to replace atomically) or ("through", the path to
    write through); ArchError for what cannot be written."""
    text = os.fspath(path)
    if not text:
        raise ArchError("no output file given (the path is empty)", hint="name the file to write, e.g. -o model.onnx")
    if text.endswith(("/", os.sep)) or os.path.basename(text) in (".", ".."):
        raise ArchError(f"cannot write '{text}': the path names a directory, not a file",
                        hint=f"name a file, e.g. '{text.rstrip('/' + os.sep) or '.'}' without the trailing slash"
                             if text.rstrip("/" + os.sep) else None)
    try:
        st = os.stat(text)
    except FileNotFoundError:
        st = None
    except OSError as e:        # a symlink loop, a name too long, a component that is a file
        raise ArchError(f"cannot write '{text}': {e.strerror or e}") from None
    special = _descriptor(text) or _in_system_dir(os.path.realpath(text))
    if st is None:
        if special:
            raise ArchError(f"cannot write '{text}': archdsl does not create files in /dev or /proc")
        return "replace", os.path.realpath(text)
    if stat.S_ISDIR(st.st_mode):
        raise ArchError(f"cannot write '{text}': it is a directory", hint="name a file inside it")
    if stat.S_ISREG(st.st_mode) and not special:
        return "replace", os.path.realpath(text)
    if stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return "through", text
    raise ArchError(f"cannot write '{text}': it is not a regular file, a pipe or a character device",
                    hint="archdsl never replaces a socket or a block device")


def is_regular_output(path) -> bool:
    """Whether writing `path` makes (or replaces) a regular file (not a pipe, device, /dev/stdout)."""
    return _plan(path)[0] == "replace"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write; on success it becomes `path`, on failure it is removed.

        with atomic_path("model.onnx") as tmp:
            onnx.save(proto, tmp)

    The temporary file exists (empty) when the body starts. A regular target is replaced by a
    rename (mode of the final file: the old file's mode when replacing one, else 0o666 minus
    the umask); a pipe or device is written through (see the module docstring).
    """
    how, where = _plan(path)
    if how == "through":
        with _write_through(where) as tmp:
            yield tmp
        return
    target = Path(where)
    directory = target.parent
    suffix = "".join(target.suffixes[-1:])
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.stem}.", suffix=f".tmp{suffix}")
    except OSError as e:
        if not directory.is_dir():
            raise ArchError(f"cannot write '{path}': {e.strerror or e}",
                            hint=f"the directory '{directory}' does not exist") from None
        raise write_error(path, e, target.exists()) from None
    os.close(fd)
    existed = target.exists()
    try:
        try:
            yield tmp
            try:
                mode = os.stat(target).st_mode & 0o7777
            except OSError:
                mode = 0o666 & ~_umask()
            os.chmod(tmp, mode)
            _fsync(tmp)
            os.replace(tmp, target)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            raise write_error(path, e, existed) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _write_through(target: str) -> Iterator[str]:
    """Produce the bytes in a temporary file elsewhere, then copy them into `target` (a pipe, a
    device, a descriptor's path), which is opened before any work is done and never replaced."""
    try:
        # O_NONBLOCK: a pipe without a reader fails at once (ENXIO) instead of waiting forever
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_APPEND)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise ArchError(f"cannot write '{target}': it is a pipe that nobody reads",
                            hint="start the reading program first") from None
        raise write_error(target, e) from None
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        suffix = "".join(Path(target).suffixes[-1:])
        tfd, tmp = tempfile.mkstemp(prefix=".archdsl.", suffix=f".tmp{suffix}")
        os.close(tfd)
        try:
            yield tmp
            with open(tmp, "rb") as src, os.fdopen(os.dup(fd), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            raise write_error(target, e) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (str is written as UTF-8) to `path` atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def writes_stdout(path) -> bool:
    """Whether `path` is this process's standard output (`/dev/stdout`, or the file or pipe it
    goes to): status lines then go to stderr, so they do not mix with the data."""
    try:
        a, b = os.stat(path), os.fstat(1)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def announce(path, text: str) -> None:
    """A status line about a file written ("wrote x.onnx ..."): to stderr when the file is our own
    stdout (`-o /dev/stdout`), so it does not mix with the data."""
    import sys
    print(text, file=sys.stderr if writes_stdout(path) else sys.stdout)


# -- inputs ------------------------------------------------------------------------------------

def _identity(path) -> tuple[str, tuple[int, int] | None]:
    p = os.fspath(path)
    try:
        st = os.stat(p)
        ident = (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        ident = None
    try:
        real = os.path.realpath(p)
    except (OSError, ValueError):
        real = p
    return real, ident


def refuse_overwriting_inputs(output, inputs: Iterable, flag: str = "-o") -> None:
    """ArchError when writing `output` would replace one of `inputs` (the same resolved path, or
    the same inode: a hard link or a symlink to it). Outputs that are written through (a pipe,
    a device) replace nothing and are not compared."""
    try:
        if output is None or not is_regular_output(output):
            return
    except ArchError:           # not writable at all: the writer says why, when it tries
        return
    out_real, out_id = _identity(output)
    for f in inputs:
        if f is None or os.fspath(f) in ("", "-"):
            continue
        real, ident = _identity(f)
        if real == out_real or (ident is not None and ident == out_id):
            raise ArchError(f"{flag} '{os.fspath(output)}' is the input file '{os.fspath(f)}': writing it "
                            "would destroy the input", hint="write the output to another file")


def _not_regular(p: str, st: os.stat_result, what: str) -> ArchError:
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a pipe (FIFO)" if stat.S_ISFIFO(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    return ArchError(f"{what} '{p}' is {kind}, not a file", hint="archdsl reads data, weights and models only "
                     "from regular files: save the data to a file first")


def open_input(path, what: str = "input") -> BinaryIO:
    """Open a data, weights or model file for reading in binary mode: only a regular file. A FIFO
    is opened without blocking (so a pipe without a writer cannot hang the command) and refused,
    as are devices and directories. `what` names the file in errors ("data", "checkpoint")."""
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise ArchError(f"{what}: no such file '{p}'") from None
    except (OSError, ValueError) as e:
        raise ArchError(f"{what}: cannot read '{p}': {getattr(e, 'strerror', None) or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(p, st, what)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_input(path, what: str = "input") -> None:
    """For a file another library opens by name (ONNX Runtime): it must be a regular file (a FIFO
    would block the library's read forever). Does not open it."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ArchError(f"{what}: no such file '{p}'") from None
    except (OSError, ValueError) as e:
        raise ArchError(f"{what}: cannot read '{p}': {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(p, st, what)
