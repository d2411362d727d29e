"""What is installed beside archdsl: distribution versions, and which distribution provides the
`onnxruntime` module (the CPU and GPU builds both do, and must not be installed together).
Read by `archdsl doctor` and by the runtime's error messages; imports nothing heavy."""
from __future__ import annotations

from importlib import metadata

# Distributions that all install the same `onnxruntime` module; more than one is a conflict.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn", "ort-nightly", "ort-nightly-gpu")


def dist_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None."""
    try:
        return metadata.version(name)
    except Exception:       # PackageNotFoundError, or broken metadata
        return None


def ort_package() -> str:
    """Which distribution provides the `onnxruntime` module here, e.g. 'onnxruntime 1.31.1'."""
    found = [f"{d} {v}" for d in ORT_DISTRIBUTIONS if (v := dist_version(d)) is not None]
    return " + ".join(found) if found else "onnxruntime (version unknown)"
