"""Methods: each registers itself by name (``method: <name>`` in a config) in ``wsss.core.registry``.

Importing this package registers the built-in methods; ``build_method`` / ``get_method_class`` are the
entry points the engine and the runs use (they need the built-ins registered).
"""

# imported for their @register_method side effect
from wsss.core.registry import METHODS, Method, build_method, get_method_class, register_method
from wsss.methods import affinitynet, cam_baseline, clip_es, deeplab, rca, sccam, seco  # noqa: F401

__all__ = ["METHODS", "Method", "build_method", "get_method_class", "register_method"]
