"""Photos that are not a dataset: a folder of them, or a list of files (``wsss predict RUN --images ...``).

:class:`PhotoFolder` reads them as the per-id jobs read a split of a :class:`~wsss.data.VOCDataset`: ``ids``
(the files' stems), ``load_image(id)`` (``utils.io.read_image``, the one reader of images: EXIF orientation
applied, any mode scaled to 8 bits) and ``labels(id)``, which is None: such photos carry no image labels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsss.core.errors import DataError
from wsss.utils.io import id_problem, read_image

# The photos read from a folder, by suffix in any case (a camera's IMG_0001.JPG too).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_KINDS = "JPEG, PNG or WebP"


def is_photo(path: Path) -> bool:
    """A file named as a photo :class:`PhotoFolder` reads (by its suffix, in any case)."""
    return path.suffix.lower() in PHOTO_SUFFIXES


class PhotoFolder:
    """The photos of ``sources``: each a folder (its JPEG, PNG and WebP files, not those of its subfolders, nor
    hidden files such as macOS's ``._IMG.jpg``) or one photo file. A photo's id is its file's stem, which names
    its outputs, so two photos of one stem are refused (one DataError naming both), as is a source that does not
    exist, a file that is not a photo, or a folder without photos. The same file given twice is read once."""

    split = "photos"  # for messages: the jobs name a dataset's split

    def __init__(self, sources: Sequence[str | os.PathLike]) -> None:
        if not sources:
            raise DataError("no photos given: name a folder of photos or photo files")
        self.paths: dict[str, Path] = {}
        # the folders and files as given, resolved: what a job's outputs record of where the photos came from
        self.sources: list[str] = [str(_resolved(Path(source))) for source in sources]
        for source in map(Path, sources):
            for path in self._photos_of(source):
                self._add(path)
        self.ids: list[str] = sorted(self.paths)

    @staticmethod
    def _photos_of(source: Path) -> list[Path]:
        if source.is_dir():
            photos = sorted(p for p in source.iterdir() if p.is_file() and is_photo(p) and not p.name.startswith("."))
            if not photos:
                raise DataError(f"{source}: no {_KINDS} photos in this folder ({', '.join(PHOTO_SUFFIXES)})")
            return photos
        if not source.exists():
            raise DataError(f"{source}: no such photo or folder")
        if not is_photo(source):
            raise DataError(f"{source}: not a {_KINDS} photo (its name ends in {source.suffix or 'no suffix'})")
        return [source]

    def _add(self, path: Path) -> None:
        id = path.stem
        other = self.paths.get(id)
        if other is not None:
            if _resolved(other) == _resolved(path):
                return  # the same file named twice (a folder and one of its files)
            raise DataError(
                f"{other} and {path}: two photos of the stem {id!r}, which names each photo's mask; rename one"
            )
        problem = id_problem(id)
        if problem is not None:
            raise DataError(f"{path}: cannot name an output after this photo ({problem})")
        self.paths[id] = path

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, id: str) -> Path:
        return self.paths[id]

    def load_image(self, id: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB, upright (EXIF orientation applied); DataError naming the file if unreadable."""
        return read_image(self.paths[id])

    def labels(self, id: str) -> None:
        """None: photos that are not a dataset have no image labels (a job that needs them finds its own)."""
        return None

    def folders(self) -> set[Path]:
        """The folders the photos are in (resolved): outputs are never written there."""
        return {_resolved(p).parent for p in self.paths.values()}


def _resolved(path: Path) -> Path:
    """``path.resolve()``; a DataError naming ``path`` when it is a symbolic link that leads back to itself (pathlib's
    RuntimeError before)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError) as e:
        raise DataError(f"{path}: a symbolic link that leads back to itself (a loop), not a photo or folder") from e
