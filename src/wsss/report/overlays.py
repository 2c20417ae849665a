"""Every mask of a folder drawn over its photo, and one page that shows them all: the route's ``OUT/masks``.

:func:`write_mask_overlays` writes ``<masks>/overlay/<id>.jpg`` (the photo, its longest side at most
:data:`OVERLAY_MAX_SIDE`, with the mask's colours blended in and a legend of its classes, as
``wsss predict --images --overlay`` draws them) and a contact sheet: an HTML page of every overlay with the colour
legend of every class the masks show. The overlay folder records its ids (``runs.stamps.SOURCES_FILE``), so that
the route's ``--overwrite`` removes them as its own.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.core.files import atomic_write
from wsss.runs.photos import OVERLAY_DIR, OVERLAY_SUFFIX
from wsss.runs.stamps import SOURCES_FILE, photo_record
from wsss.utils.io import read_image, read_label_png, save_overlay, voc_palette

__all__ = ["OVERLAY_MAX_SIDE", "write_mask_overlays"]

OVERLAY_MAX_SIDE = 1024  # a picture to look at: a phone's 4000-pixel photo would make each file megabytes


def _overlay(path: Path, image: Path, mask: Path, class_names: Sequence[str]) -> set[int]:
    """One overlay written at ``path``; the classes its mask shows."""
    label = read_label_png(mask)
    picture = read_image(image, max_side=OVERLAY_MAX_SIDE)
    if picture.shape[:2] != label.shape:  # the photo shrunk: its mask alike, each pixel's class kept
        size = (picture.shape[1], picture.shape[0])
        label = np.asarray(Image.fromarray(label).resize(size, Image.Resampling.NEAREST))
    save_overlay(path, picture, label, class_names=class_names)
    return {int(c) for c in np.unique(label) if 0 < c < len(class_names)}


def write_mask_overlays(
    masks: str | os.PathLike,
    images: Mapping[str, Path],
    class_names: Sequence[str],
    page: str | os.PathLike,
    say: Callable[[str], None] | None = None,
) -> Path:
    """The overlay of each ``<masks>/<id>.png`` whose photo ``images`` names (module docstring), and the contact sheet
    at ``page`` (its links relative to it); returns ``page``."""
    masks, page = Path(masks), Path(page)
    folder = masks / OVERLAY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    ids = sorted(p.stem for p in masks.glob("*.png") if not p.name.startswith(".") and p.stem in images)
    with atomic_write(folder / SOURCES_FILE, "w") as f:  # before the overlays: a killed step's are named too
        json.dump({i: photo_record(masks / f"{i}.png") for i in ids}, f, sort_keys=True)
    shown: dict[str, set[int]] = {}
    for i in ids:
        shown[i] = _overlay(folder / f"{i}{OVERLAY_SUFFIX}", images[i], masks / f"{i}.png", class_names)
    page.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(page, "w") as f:
        f.write(_sheet(shown, folder, page, class_names))
    if say is not None:
        say(f"  {len(ids)} overlays in {folder}; all of them on one page: {page}")
    return page


def _sheet(shown: Mapping[str, set[int]], folder: Path, page: Path, class_names: Sequence[str]) -> str:
    """The contact sheet: the legend of every class shown, then each overlay (linked full size) and its classes."""
    link = Path(os.path.relpath(folder, page.parent)).as_posix()
    palette = voc_palette()
    every = sorted(set().union(*shown.values())) if shown else []
    legend = "".join(
        f'<span class=key><i style="background:rgb{tuple(int(v) for v in palette[c])}"></i>'
        f"{html.escape(class_names[c])}</span>"
        for c in every
    )
    cells = "".join(
        f'<figure><a href="{link}/{html.escape(i)}{OVERLAY_SUFFIX}"><img loading=lazy '
        f'src="{link}/{html.escape(i)}{OVERLAY_SUFFIX}" alt="{html.escape(i)}"></a><figcaption>{html.escape(i)}: '
        f"{html.escape(', '.join(class_names[c] for c in sorted(classes)) or 'background only')}</figcaption></figure>"
        for i, classes in shown.items()
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>masks of {len(shown)} photos</title>
<style>body{{font-family:sans-serif;margin:1em}} figure{{display:inline-block;margin:4px;width:260px;
vertical-align:top}} img{{max-width:260px;max-height:260px}} figcaption{{font-size:12px}}
.key{{display:inline-block;margin-right:1em}} .key i{{display:inline-block;width:1em;height:1em;margin-right:4px;
border:1px solid black;vertical-align:middle}}</style></head><body>
<h1>The masks of {len(shown)} photos</h1><p>{legend}</p>
{cells}
</body></html>
"""
