"""Packages whose public names are imported on first use (archdsl.train, archdsl.gan), so that
`archdsl check`, whose parser registers their subcommands, does not pay for their imports."""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """The module-level `__getattr__` and `__dir__` for `package`: `exports` maps each public
    name to the submodule that defines it; a name is cached in `namespace` (the package's
    globals()) once it has been imported."""

    def __getattr__(name):
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(list(namespace) + list(exports))

    return __getattr__, __dir__
