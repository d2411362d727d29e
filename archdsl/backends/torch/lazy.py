"""PyTorch, imported on first use.

Op modules write their PyTorch forwards against `torch` and `TF` (torch.nn.functional) from here,
and `TK` (archdsl's torch kernels, kernels.py): each is a stand-in that imports the real module
the first time one of its names is used, so `import archdsl` never imports PyTorch, and using the
engine without it installed is an ArchError that says how to install it.
"""
from __future__ import annotations

import importlib

from ...errors import ArchError

INSTALL = "pip install 'archdsl[torch]'"


def require_torch(purpose: str = "the PyTorch engine"):
    """The torch module, or an ArchError naming the install command."""
    try:
        import torch
    except ImportError:
        raise ArchError(f"{purpose} needs PyTorch, which is not installed", hint=INSTALL) from None
    return torch


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class LazyModule:
    """A module imported when one of its names is first read; each name is then cached on the
    stand-in, so later uses cost a plain attribute lookup."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        require_torch()
        value = getattr(importlib.import_module(self._name), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self._name}>"


torch = LazyModule("torch")
TF = LazyModule("torch.nn.functional")
TK = LazyModule("archdsl.backends.torch.kernels")
