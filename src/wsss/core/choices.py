"""The names some of the library's options take, which the ``wsss`` parser offers as choices: a module that imports
nothing, so that building the parser imports no data or model code (tests/methods/test_registry.py)."""

from __future__ import annotations

# How a dataset holds its photos in JPEGImages (wsss.data.prepare.place_image; `wsss prepare`, `wsss data fetch`
# --image-mode): hard link (a copy across devices), symbolic link, copy, or nothing
IMAGE_MODES = ("link", "symlink", "copy", "none")

# The labelling tools `wsss export masks --format` writes pre-annotations for (wsss.runs.export_masks)
MASK_FORMATS = ("coco", "cvat", "labelme", "labelstudio")

# What `wsss route` writes in its folder that `wsss export masks ROUTE` reads (wsss.pipelines.route, below which
# wsss.runs.export_masks lies): every train and val photo's mask, and the facts (class names, photos) it chose from
ROUTE_MASKS_DIR, ROUTE_FACTS_FILE = "masks", "data_facts.json"
# the unmasked photos the route advises drawing next (wsss.evaluation.agreement.draw_next)
ROUTE_DRAW_NEXT_FILE = "draw_next.csv"
