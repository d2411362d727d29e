"""`archdsl doctor`: what this installation can do, and what to fix.

doctor_report() returns (item, detail, ok) rows. ok is False only where something archdsl
promises will not work here, or the installation is inconsistent (e.g. both onnxruntime and
onnxruntime-gpu installed, or a CUDA provider that cannot start). An optional extra that is
simply absent (torch, a GPU) is ok=True with a note saying what it would add.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from .installed import ORT_DISTRIBUTIONS
from .installed import dist_version as _dist_version

__all__ = ["doctor_report", "format_doctor", "ORT_DISTRIBUTIONS"]

Row = tuple[str, str, bool]


def _archdsl() -> Row:
    try:
        import archdsl
        where = os.path.dirname(os.path.abspath(archdsl.__file__)) if archdsl.__file__ else "?"
        return ("archdsl", f"{archdsl.__version__} ({where})", True)
    except Exception as e:  # pragma: no cover - we are running inside archdsl
        return ("archdsl", f"cannot import: {e}", False)


def _python() -> Row:
    ok = sys.version_info >= (3, 10)
    detail = f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})"
    if not ok:
        detail += "; archdsl needs Python >= 3.10"
    return ("python", detail, ok)


def _numpy() -> Row:
    try:
        import numpy as np
        return ("numpy", np.__version__, True)
    except Exception as e:
        return ("numpy", f"not importable: {e} (pip install numpy)", False)


def _onnx() -> Row:
    try:
        import onnx
        import onnx.defs
        return ("onnx", f"{onnx.__version__}, max opset {onnx.defs.onnx_opset_version()}", True)
    except Exception as e:
        return ("onnx", f"not importable: {e} (pip install onnx); export will not work", False)


def _onnxruntime() -> list[Row]:
    dists = [(d, v) for d in ORT_DISTRIBUTIONS if (v := _dist_version(d)) is not None]
    try:
        import onnxruntime as ort
    except Exception as e:
        detail = f"not importable: {e}; running models will not work (pip install onnxruntime"
        detail += ", or onnxruntime-gpu for CUDA)"
        if dists:
            detail += f"; installed distributions: {', '.join(f'{d} {v}' for d, v in dists)}"
        return [("onnxruntime", detail, False),
                ("execution providers", "unknown: onnxruntime is not importable", False),
                ("cuda", "unknown: onnxruntime is not importable", True)]
    build = ", ".join(f"{d} {v}" for d, v in dists) or "package metadata not found"
    rows: list[Row] = []
    if len(dists) > 1:
        rows.append(("onnxruntime", f"{ort.__version__}; CONFLICT: {build} are all installed and share the "
                     "`onnxruntime` module; uninstall all of them, then install one "
                     "(onnxruntime for CPU, or onnxruntime-gpu for CUDA, e.g. `make gpu`)", False))
    else:
        rows.append(("onnxruntime", f"{ort.__version__} ({build})", True))
    try:
        providers = list(ort.get_available_providers())
    except Exception as e:
        return rows + [("execution providers", f"cannot list: {e}", False)]
    rows.append(("execution providers", ", ".join(providers) or "none", "CPUExecutionProvider" in providers))
    rows.append(_cuda(providers, dists))
    return rows


def _tiny_model() -> bytes:
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "doctor", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    return m.SerializeToString()


def _cuda(providers: list[str], dists) -> Row:
    if "CUDAExecutionProvider" not in providers:
        names = {d for d, _ in dists}
        why = "CPU build of onnxruntime" if "onnxruntime-gpu" not in names else "CUDA provider not listed"
        return ("cuda", f"not available ({why}); optional: for GPU inference, "
                        "`make gpu` (swaps onnxruntime for onnxruntime-gpu)", True)
    # The provider is compiled in; only creating a session tells whether CUDA/cuDNN really load.
    from archdsl.errors import ArchError
    from archdsl.runtime import Session
    try:
        s = Session(_tiny_model(), device="cuda")
        out = s.run({"x": [1.0]})
        if float(out["y"][0]) != 1.0:
            return ("cuda", "a CUDA session ran but returned a wrong result", False)
    except ArchError as e:
        return ("cuda", f"CUDAExecutionProvider is installed but not usable: {e.message}"
                        + (f" ({e.hint})" if e.hint else ""), False)
    except Exception as e:
        return ("cuda", f"CUDAExecutionProvider is installed but a test session failed: {e}", False)
    extra = ""
    try:
        import onnxruntime as ort
        cv = getattr(ort, "cuda_version", None)
        if cv:
            extra = f", built for CUDA {cv}"
    except Exception:
        pass
    return ("cuda", f"usable (a test session ran on CUDAExecutionProvider{extra})", True)


def _graphviz_py() -> Row:
    try:
        import graphviz
        return ("graphviz (python)", getattr(graphviz, "__version__", None) or _dist_version("graphviz") or "installed",
                True)
    except Exception:
        return ("graphviz (python)", "not installed; `archdsl render` needs it (pip install graphviz)", False)


def _dot() -> Row:
    path = shutil.which("dot")
    if path is None:
        return ("dot", "Graphviz `dot` not found on PATH; rendering to SVG/PNG will not work, DOT text still "
                       "does (install Graphviz: apt install graphviz / brew install graphviz / "
                       "https://graphviz.org/download/)", False)
    try:
        p = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10)
        version = (p.stderr or p.stdout).strip().splitlines()
        version_s = version[0] if version else f"exit code {p.returncode}"
        ok = p.returncode == 0
    except (OSError, subprocess.SubprocessError) as e:
        return ("dot", f"{path}: cannot run `dot -V`: {e}", False)
    return ("dot", f"{version_s} ({path})", ok)


def _torch() -> Row:
    v = _dist_version("torch")
    if v is None:
        return ("torch", "not installed (optional: benchmarks and oracle tests)", True)
    return ("torch", f"{v} (optional: benchmarks and oracle tests)", True)


def _numba() -> Row:
    v = _dist_version("numba")
    if v is None:
        return ("numba", "not installed (optional, `pip install 'archdsl[fast]'`: batch norm, layer norm, ReLU and Adam "
                "as compiled multithreaded kernels; without it they run as NumPy passes)", True)
    off = [k for k in ("ARCHDSL_JIT", "ARCHDSL_KERNELS") if os.environ.get(k) == "numpy"]
    return ("numba", f"{v}: compiled kernels " + (f"off ({off[0]}=numpy)" if off else "on"), True)


def doctor_report() -> list[Row]:
    """(item, detail, ok) for each thing archdsl depends on or can use."""
    rows: list[Row] = [_archdsl(), _python(), _numpy(), _onnx()]
    rows += _onnxruntime()
    rows += [_graphviz_py(), _dot(), _torch(), _numba()]
    return rows


def format_doctor(rows: list[Row] | None = None) -> str:
    """The report as aligned text, one line per item, with a closing summary."""
    rows = doctor_report() if rows is None else rows
    width = max((len(r[0]) for r in rows), default=0)
    lines = [f"{'ok ' if ok else '!! '} {item.ljust(width)}  {detail}" for item, detail, ok in rows]
    bad = [item for item, _, ok in rows if not ok]
    lines.append("")
    lines.append("everything archdsl needs is in place" if not bad
                 else f"{len(bad)} problem{'s' if len(bad) != 1 else ''}: {', '.join(bad)}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m archdsl.doctor
    print(format_doctor())
