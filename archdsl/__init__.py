"""archdsl: a compiler for neural-network architectures."""
from .api import CompiledModel, Spec, compile
from .errors import ArchError
from .version import __version__

__all__ = ["compile", "Spec", "CompiledModel", "ArchError", "__version__"]
