"""Methods: each registers itself by name (``method: <name>`` in a config)."""

from wsss.methods import cam_baseline, seco  # noqa: F401
from wsss.methods.base import METHODS, Method, build_method, get_method_class, register_method

__all__ = ["METHODS", "Method", "build_method", "get_method_class", "register_method"]
