"""Atomic writes: an interrupted writer leaves the old file, never a partial one."""
from __future__ import annotations

import os
import stat

import pytest

from archdsl.errors import ArchError
from archdsl.fileio import atomic_path, atomic_write


def test_atomic_write_text_and_bytes(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write(p, "héllo")
    assert p.read_bytes() == "héllo".encode()
    atomic_write(str(p), b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failed_writer_leaves_old_file(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half of the new")
            raise RuntimeError("writer died")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_interrupt_leaves_no_file(tmp_path):
    p = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(p) as tmp:
            open(tmp, "wb").close()
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_temp_is_a_sibling_with_the_same_extension(tmp_path):
    p = tmp_path / "weights.npz"
    with atomic_path(p) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".npz") and os.path.exists(tmp)
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert p.read_bytes() == b"new"


def test_mode_kept_or_default(tmp_path):
    p = tmp_path / "x.txt"
    atomic_write(p, "1")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    p.chmod(0o640)
    atomic_write(p, "2")
    assert stat.S_IMODE(p.stat().st_mode) == 0o640 and p.read_text() == "2"


def test_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(ArchError) as e:
        atomic_write(tmp_path / "nope" / "x.txt", "1")
    assert "cannot write" in str(e.value) and "does not exist" in e.value.hint


def test_which_outputs_are_replaced_and_which_are_written_through(tmp_path):
    # nothing is written: is_regular_output only looks at the path
    from archdsl.fileio import is_regular_output
    (tmp_path / "f.onnx").write_bytes(b"x")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "f.onnx")
    os.mkfifo(tmp_path / "p.onnx")
    assert is_regular_output(tmp_path / "f.onnx") and is_regular_output(tmp_path / "link.onnx")
    assert is_regular_output(tmp_path / "new.onnx")
    assert not is_regular_output(tmp_path / "p.onnx")
    assert not is_regular_output("/dev/null") and not is_regular_output("/dev/stdout")
    assert not is_regular_output("/proc/self/fd/2")
    if os.path.isdir("/dev/shm"):                  # an ordinary directory under /dev
        assert is_regular_output("/dev/shm/archdsl-never-written.onnx")
    with pytest.raises(ArchError, match="does not create files in /dev"):
        is_regular_output("/dev/archdsl-never-written.onnx")
