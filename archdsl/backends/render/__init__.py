"""Drawing backend: models -> DOT source, or SVG / PNG / PDF through graphviz's `dot`."""
from .dot import FORMATS, render, to_dot

__all__ = ["FORMATS", "render", "to_dot"]
