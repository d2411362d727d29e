"""archdsl's version, in a module of its own so that every layer can read it without
importing the package (and the public API) above it."""
__version__ = "0.1.0"
