"""Named tensors from other frameworks' files, as NumPy arrays:

    .safetensors          the safetensors package's NumPy API (no torch needed; bfloat16 widened)
    .pt .pth .bin .ckpt   torch.load(..., weights_only=True), when torch is installed
    .onnx                 the initializers of an ONNX model
    a folder              a Hugging Face model folder: config.json and model.safetensors,
                          sharded (model.safetensors.index.json) or not, or pytorch_model.bin

A config.json beside a file is read too: the importer checks it against the spec's parameters.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArchError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SUFFIXES = (".safetensors", ".onnx") + TORCH_SUFFIXES
TORCH_HINT = "pip install 'archdsl[torch]' (PyTorch reads .pt/.pth/.bin files and runs --verify; .safetensors needs nothing more)"
# In a Hugging Face folder, in order of preference: (index of shards, single file).
HF_WEIGHTS = (("model.safetensors.index.json", "model.safetensors"),
              ("pytorch_model.bin.index.json", "pytorch_model.bin"))


@dataclass
class Source:
    path: str
    kind: str                                  # safetensors | torch | onnx | huggingface
    tensors: dict[str, np.ndarray]
    config: dict | None = None                 # config.json, when there is one
    config_path: str | None = None
    files: list[str] = field(default_factory=list)


def is_foreign(path) -> bool:
    """A file or folder for this module (not an archdsl .npz checkpoint or run directory)."""
    p = Path(path)
    if p.is_dir():
        return not (p / "checkpoint.npz").exists() and any((p / n).exists() for n in _hf_names())
    return p.suffix.lower() in SUFFIXES


def _hf_names():
    return [n for pair in HF_WEIGHTS for n in pair] + ["config.json"]


def read_source(path) -> Source:
    p = Path(path)
    if p.is_dir():
        return _read_folder(p)
    if not p.exists():
        raise ArchError(f"no such file '{p}'")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        src = Source(str(p), "safetensors", read_safetensors(p), files=[str(p)])
    elif suffix in TORCH_SUFFIXES:
        src = Source(str(p), "torch", read_torch(p), files=[str(p)])
    elif suffix == ".onnx":
        src = Source(str(p), "onnx", read_onnx(p), files=[str(p)])
    else:
        raise ArchError(f"'{p}': unknown weights format '{suffix}'",
                        hint="archdsl reads .npz (its own), .safetensors, .pt/.pth/.bin, .onnx and "
                             "Hugging Face model folders")
    beside = p.parent / "config.json"
    if beside.is_file() and src.kind != "onnx":
        src.config, src.config_path = _read_config(beside), str(beside)
    return src


def _read_folder(d: Path) -> Source:
    cfg = d / "config.json"
    for index, single in HF_WEIGHTS:
        if (d / index).is_file():
            files = _shards(d / index)
        elif (d / single).is_file():
            files = [d / single]
        else:
            continue
        tensors: dict[str, np.ndarray] = {}
        for f in files:
            part = read_safetensors(f) if f.suffix == ".safetensors" else read_torch(f)
            tensors.update(part)
        return Source(str(d), "huggingface", tensors, _read_config(cfg) if cfg.is_file() else None,
                      str(cfg) if cfg.is_file() else None, [str(f) for f in files])
    raise ArchError(f"'{d}' holds no weights: expected model.safetensors (or its sharded index "
                    f"model.safetensors.index.json) or pytorch_model.bin",
                    hint="pass a weights file, or a Hugging Face model folder (save_pretrained writes one)")


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArchError(f"'{index}' is not a readable shard index: {e}") from None
    files = []
    for name in dict.fromkeys(weight_map.values()):
        f = index.parent / name
        if not f.is_file():
            raise ArchError(f"'{index}' lists the shard '{name}', which is not in '{index.parent}'",
                            hint="download every shard of the checkpoint")
        files.append(f)
    return files


def _read_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArchError(f"'{path}' is not readable JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ArchError(f"'{path}' is not a configuration (a JSON object)")
    return cfg


# -- formats ------------------------------------------------------------------------------------

def read_safetensors(path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open
    try:
        import ml_dtypes  # noqa: F401  (onnx's dependency: gives NumPy bfloat16 and the float8s)
    except ImportError:
        pass
    try:
        with safe_open(str(path), framework="np") as f:
            return {k: _widen(f.get_tensor(k)) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ArchError(f"'{path}' is not a readable safetensors file (truncated or corrupt?): {e}") from None
    except TypeError as e:
        raise ArchError(f"'{path}': a tensor's dtype is not one NumPy can hold ({e})") from None


def _widen(a: np.ndarray) -> np.ndarray:
    """float32 for the floating types of an extension (bfloat16, float8), which BLAS cannot use."""
    return a if a.dtype.kind in "fiub" else a.astype(np.float32)


def torch_module(purpose: str = "reading PyTorch checkpoints"):
    try:
        import torch
    except ImportError:
        raise ArchError(f"{purpose} needs PyTorch, which is not installed", hint=TORCH_HINT) from None
    return torch


def read_torch(path) -> dict[str, np.ndarray]:
    torch = torch_module()
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:      # pickle errors, truncated zip files, refused globals: all user input
        raise ArchError(f"'{path}' is not a readable PyTorch checkpoint: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                        hint="archdsl loads tensors only (weights_only=True); save the model's "
                             "state_dict(), not the module") from None
    state = _state_dict(obj, torch)
    if state is None:
        keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
        raise ArchError(f"'{path}' holds no state dict of tensors (found: {keys})",
                        hint="save it with torch.save(model.state_dict(), path)")
    return {k: _to_numpy(v, torch) for k, v in state.items()}


def _state_dict(obj, torch):
    """The tensors of a state dict, or of one nested under 'state_dict', 'model', ... (as
    training frameworks save them)."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "module", "weights"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                found = _state_dict(inner, torch)
                if found is not None:
                    return found
    return None


def _to_numpy(t, torch) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64, torch.float16):
        t = t.float()                   # bfloat16 and the float8s: NumPy has no such dtypes
    return t.numpy()


def read_onnx(path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper
    try:
        model = onnx.load(str(path))         # external data is read from beside the file
    except Exception as e:
        raise ArchError(f"'{path}' is not a readable ONNX model (truncated or corrupt?): {e}") from None
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def write_safetensors(tensors: dict[str, np.ndarray], path) -> Path:
    """Write tensors atomically, with the metadata Hugging Face's loaders look for."""
    from safetensors.numpy import save_file

    from ..fileio import atomic_path
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, tmp, metadata={"format": "pt"})
    return Path(path)


def write_config(config: dict, path) -> Path:
    from ..fileio import atomic_write
    atomic_write(path, json.dumps(config, indent=2) + "\n")
    return Path(path)


def describe(src: Source) -> str:
    n = sum(int(np.prod(a.shape)) for a in src.tensors.values())
    what = {"huggingface": "Hugging Face folder", "torch": "PyTorch checkpoint", "onnx": "ONNX model",
            "safetensors": "safetensors file"}[src.kind]
    return f"{what} {src.path} ({len(src.tensors)} tensors, {n:,} values)"

