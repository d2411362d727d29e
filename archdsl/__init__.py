"""archdsl: a compiler for neural-network architectures."""
from .version import __version__

import importlib as _importlib

# Imported on first use: `archdsl.cli` (the `archdsl` command) starts without NumPy, Lark or ONNX,
# so a Ctrl-C while they load is handled by the CLI (exit 130) rather than a traceback.
_EXPORTS = {"compile": "api", "Spec": "api", "CompiledModel": "api", "ArchError": "errors"}
__all__ = ["compile", "Spec", "CompiledModel", "ArchError", "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    try:                                  # `archdsl.api`, `archdsl.train`, ... as before
        return _importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
