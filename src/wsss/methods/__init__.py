"""Methods: each registers itself by name (``method: <name>`` in a config)."""

# imported for their @register_method side effect
from wsss.methods import affinitynet, cam_baseline, deeplab, rca, sccam, seco  # noqa: F401
from wsss.methods.base import METHODS, Method, build_method, get_method_class, register_method

__all__ = ["METHODS", "Method", "build_method", "get_method_class", "register_method"]
