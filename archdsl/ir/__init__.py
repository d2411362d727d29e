from .graph import Model, Node, Param, ParamSpec, Scope, Value
from .types import DTYPES, Sym, TensorType, broadcast_shapes, is_static, resolve_dim

__all__ = ["Model", "Node", "Param", "ParamSpec", "Scope", "Value", "DTYPES", "Sym", "TensorType",
           "broadcast_shapes", "is_static", "resolve_dim"]
