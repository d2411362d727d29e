"""archdsl: a compiler for neural-network architectures."""
__version__ = "0.1.0"

from .api import CompiledModel, Spec, compile  # noqa: E402
from .errors import ArchError  # noqa: E402

__all__ = ["compile", "Spec", "CompiledModel", "ArchError", "__version__"]
