"""Methods: each registers itself by name (``method: <name>`` in a config) in ``wsss.methods.contract``.

Importing this package registers the built-in methods and their refiners; ``build_method`` /
``get_method_class`` are the entry points the engine and the runs use (they need the built-ins registered).
"""

# imported for their @register_method / @register_refiner side effect
from wsss.methods import affinitynet, cam, clip_es, deeplab, excel, rca, sccam, seco, weclip_plus  # noqa: F401
from wsss.methods.contract import (
    MASK_TERM,
    METHODS,
    REFINERS,
    EngineAPI,
    JobStop,
    Method,
    PoolCall,
    RefineJob,
    Refiner,
    RegisteredRefiner,
    TrainContext,
    available_methods,
    build_method,
    check_method,
    get_method_class,
    import_custom_modules,
    load_entry_points,
    method_class,
    placeholder_classes,
    refiner_options,
    refiners_of,
    register_method,
    register_refiner,
)

__all__ = [
    "MASK_TERM",
    "METHODS",
    "REFINERS",
    "EngineAPI",
    "JobStop",
    "Method",
    "PoolCall",
    "RefineJob",
    "Refiner",
    "RegisteredRefiner",
    "TrainContext",
    "available_methods",
    "build_method",
    "check_method",
    "get_method_class",
    "import_custom_modules",
    "load_entry_points",
    "method_class",
    "placeholder_classes",
    "refiner_options",
    "refiners_of",
    "register_method",
    "register_refiner",
]
