"""``wsss prepare voc``: PASCAL VOC 2012 + SBD -> the augmented training set (docs/datasets.md#voc-layout).

Inputs, as downloaded:

- the VOC 2012 devkit (``VOCdevkit/VOC2012``): ``JPEGImages/``, ``SegmentationClass/`` (palette PNGs
  holding class indices, 255 on object boundaries), ``Annotations/<id>.xml``,
  ``ImageSets/Segmentation/{train,val,trainval}.txt`` and, with the test tar unpacked into the same
  tree, ``test.txt``;
- the SBD release (``benchmark_RELEASE``): ``dataset/cls/<id>.mat`` holding the struct ``GTcls``
  whose field ``Segmentation`` is the uint8 class map (0..20, no boundary class), and
  ``dataset/{train,val}.txt``.

Outputs in ``ROOT`` (the toolkit's layout, the one ToCo/SeCo/PSA read):

- ``SegmentationClassAug/<id>.png`` for every id of ``train_aug`` and VOC ``trainval``: the VOC mask
  where VOC has one (VOC wins, its 255 boundaries kept), else the SBD map;
- ``ImageSets/Segmentation/train_aug.txt`` = VOC train + SBD train + SBD val - VOC val (10,582 ids
  on the official releases), and VOC's ``train``, ``val``, ``trainval`` (and ``test``);
- ``cls_labels.npy``: {id: float32 multi-hot (20,)} for train_aug + val (12,031 ids), from the
  masks written (``labels="mask"``, the default: labels and masks agree, so ``wsss check-data``
  passes), or from the ``Annotations`` XML object names as PSA's ``make_cls_labels.py`` does
  (``labels="xml"``, PSA/ToCo/SeCo's file; ``"auto"``: XML when every id has one, else masks). XML
  labels also name objects a mask does not show; check-data warns about those ids (legal for training);
- ``classes.txt`` (the 21 VOC classes) and ``JPEGImages/`` (hard links by default).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from wsss.core.errors import DataError, UsageError
from wsss.data.classes import VOC_CLASSES, write_classes
from wsss.data.prepare import (
    PrepareSummary,
    default_workers,
    first,
    mark_prepared,
    parallel_map,
    place_image,
    release_outputs,
    remove_outputs,
    remove_stale_outputs,
    write_split,
)
from wsss.data.voc import labels_from_mask, parse_split, write_cls_labels
from wsss.utils.io import per_id_path, read_label_png, save_label_png

#: Counts of the official releases (docs/datasets.md#voc-layout); checked when the inputs are the full releases.
OFFICIAL_COUNTS = {"voc_train": 1464, "voc_val": 1449, "sbd_train": 8498, "sbd_val": 2857}
OFFICIAL_OUTPUTS = {"train_aug": 10582, "cls_labels": 12031, "masks": 12031}

AUG_DIR = "SegmentationClassAug"
NUM_CLASSES = len(VOC_CLASSES)


def find_voc_root(path: str | os.PathLike) -> Path:
    """The ``VOC2012`` folder under ``path`` (``path`` itself, ``VOC2012/`` or ``VOCdevkit/VOC2012``)."""
    p = Path(path)
    for cand in (p, p / "VOC2012", p / "VOCdevkit" / "VOC2012"):
        if (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise DataError(
        f"{p}: not a VOC 2012 devkit (no ImageSets/Segmentation here, in VOC2012/ or in VOCdevkit/VOC2012/)"
    )


def find_sbd_root(path: str | os.PathLike) -> Path:
    """The SBD ``dataset`` folder under ``path`` (``path`` itself or ``dataset/`` inside it)."""
    p = Path(path)
    for cand in (p, p / "dataset", p / "benchmark_RELEASE" / "dataset"):
        if (cand / "cls").is_dir():
            return cand
    raise DataError(f"{p}: not an SBD release (no cls/ folder here or in dataset/)")


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    ids, unsafe = parse_split(path)  # ids become output file names: refused if they could leave the folder
    if unsafe:
        raise DataError(unsafe[0] + (f" (and {len(unsafe) - 1} more)" if len(unsafe) > 1 else ""))
    return ids


def read_sbd_mat(path: Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` as (H, W) uint8 (values 0..20)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds for a bad file
        raise DataError(f"{path}: cannot read SBD .mat file ({type(e).__name__}: {e})") from e
    gt = mat.get("GTcls")
    if gt is None:
        raise DataError(f"{path}: no GTcls struct (keys: {', '.join(k for k in mat if not k.startswith('__'))})")
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise DataError(f"{path}: GTcls has no Segmentation field")
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise DataError(f"{path}: GTcls.Segmentation has shape {seg.shape}, expected (H, W)")
    bad = np.setdiff1d(np.unique(seg), np.arange(NUM_CLASSES))
    if bad.size:
        raise DataError(f"{path}: GTcls.Segmentation has values {bad.tolist()} outside 0..{NUM_CLASSES - 1}")
    return seg.astype(np.uint8)


def xml_labels(path: Path) -> np.ndarray:
    """Multi-hot (20,) of the object classes named in a VOC ``Annotations/<id>.xml`` (PSA's rule:
    every object, difficult or truncated ones included; part names such as ``head`` are no class)."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as e:
        raise DataError(f"{path}: cannot read annotation XML ({e})") from e
    vec = np.zeros(NUM_CLASSES - 1, dtype=np.float32)
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES[1:]:
            raise DataError(f"{path}: unknown object class {name!r}")
        vec[VOC_CLASSES.index(name) - 1] = 1.0
    return vec


def _write_mask(job: tuple[str, str, str, str]) -> tuple[str, np.ndarray]:
    """Worker: (id, "voc" | "sbd", source path, output path) -> (id, multi-hot of the mask written).

    An existing output is kept (read back for its labels), so a rerun continues an interrupted one.
    """
    id, kind, src, out = job[0], job[1], Path(job[2]), Path(job[3])
    if out.is_file():
        mask = read_label_png(out)
    else:
        if kind == "voc":
            mask = read_label_png(src)
            bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(NUM_CLASSES), 255])
            if bad.size:
                raise DataError(f"{src}: mask values {bad.tolist()} are not VOC classes (0..20) or 255")
        else:
            mask = read_sbd_mat(src)
        save_label_png(out, mask)
    return id, labels_from_mask(mask, NUM_CLASSES)


def check_counts(counts: dict[str, int]) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the counts of a conversion.

    When the inputs have the official sizes (VOC train 1464 / val 1449, SBD train 8498 / val 2857),
    the outputs must have theirs (train_aug 10582, 12031 masks and labels): anything else is an error.
    Partial inputs give a warning that the counts are not the official ones.
    """
    errors, warnings = [], []
    official_inputs = all(counts.get(k) == v for k, v in OFFICIAL_COUNTS.items())
    if official_inputs:
        for k, v in OFFICIAL_OUTPUTS.items():
            if counts.get(k) != v:
                errors.append(f"{k}: {counts.get(k)} ids, expected {v} from the full official releases")
    else:
        diff = ", ".join(
            f"{k} {counts.get(k, 0)} (official {v})" for k, v in OFFICIAL_COUNTS.items() if counts.get(k) != v
        )
        n = counts.get("train_aug")
        warnings.append(f"inputs are not the full official releases ({diff}); train_aug has {n} ids, not 10582")
    return errors, warnings


def _read_voc_lists(voc_root: Path, sbd_root: Path | None) -> tuple[list[str], ...]:
    """VOC's train, val, trainval (train + val if absent), test (empty if absent); SBD's train, val."""
    seg_sets = voc_root / "ImageSets" / "Segmentation"
    voc_train = _read_list(seg_sets / "train.txt")
    voc_val = _read_list(seg_sets / "val.txt")
    trainval_path = seg_sets / "trainval.txt"
    voc_trainval = _read_list(trainval_path) if trainval_path.is_file() else sorted(set(voc_train) | set(voc_val))
    voc_test = _read_list(seg_sets / "test.txt") if (seg_sets / "test.txt").is_file() else []
    sbd_train = _read_list(sbd_root / "train.txt") if sbd_root else []
    sbd_val = _read_list(sbd_root / "val.txt") if sbd_root else []
    return voc_train, voc_val, voc_trainval, voc_test, sbd_train, sbd_val


def _mask_jobs(
    labelled: list[str], voc_root: Path, sbd_root: Path | None, out: Path
) -> list[tuple[str, str, str, str]]:
    """(id, source kind, source, destination) of every mask. Mask sources: VOC wins; SBD for the rest."""
    jobs, missing = [], []
    for id in labelled:
        voc_mask = voc_root / "SegmentationClass" / f"{id}.png"
        sbd_mat = sbd_root / "cls" / f"{id}.mat" if sbd_root else None
        if voc_mask.is_file():
            jobs.append((id, "voc", str(voc_mask), str(per_id_path(out / AUG_DIR, id, ".png"))))
        elif sbd_mat is not None and sbd_mat.is_file():
            jobs.append((id, "sbd", str(sbd_mat), str(per_id_path(out / AUG_DIR, id, ".png"))))
        else:
            missing.append(id)
    if missing:
        where = f"{voc_root / 'SegmentationClass'}" + (f" or {sbd_root / 'cls'}" if sbd_root else "")
        raise DataError(f"{len(missing)} ids of the splits have no mask in {where}: {first(missing)}")
    return jobs


def _image_sources(image_ids: list[str], voc_root: Path, sbd_root: Path | None) -> dict[str, Path]:
    """Images: VOC 2012's JPEGImages holds every SBD image; SBD's img/ is the fallback."""
    sources, no_image = {}, []
    for id in image_ids:
        src = voc_root / "JPEGImages" / f"{id}.jpg"
        if not src.is_file() and sbd_root is not None:
            src = sbd_root / "img" / f"{id}.jpg"
        if src.is_file():
            sources[id] = src
        else:
            no_image.append(id)
    if no_image:
        raise DataError(f"{len(no_image)} ids have no image in {voc_root / 'JPEGImages'}: {first(no_image)}")
    return sources


def _image_labels(
    label_ids: list[str], labels: str, voc_root: Path, mask_labels: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], bool]:
    """id -> multi-hot image label, from the Annotations XML or the masks; and whether from the XML."""
    xml_dir = voc_root / "Annotations"
    use_xml = labels == "xml" or (labels == "auto" and all((xml_dir / f"{i}.xml").is_file() for i in label_ids))
    if use_xml:
        absent = [i for i in label_ids if not (xml_dir / f"{i}.xml").is_file()]
        if absent:
            raise DataError(f"{xml_dir}: {len(absent)} ids have no annotation XML: {first(absent)}")
        table = {i: xml_labels(xml_dir / f"{i}.xml") for i in label_ids}
    else:
        table = {i: mask_labels[i] for i in label_ids}
    return table, use_xml


def _checked_summary(out: Path, counts: dict[str, int], use_xml: bool, table: dict[str, np.ndarray]) -> PrepareSummary:
    """The summary of a VOC preparation; DataError when the counts disagree with the official releases."""
    summary = PrepareSummary(out=out, counts=counts)
    summary.notes.append(f"image labels from {'the Annotations XML (as PSA)' if use_xml else 'the masks'}")
    empty = [i for i, v in table.items() if not v.any()]
    if empty:
        summary.warnings.append(f"{len(empty)} ids have no foreground label: {first(empty)}")
    errors, warnings = check_counts(counts)
    summary.warnings += warnings
    if errors:
        raise DataError(f"{out}: inconsistent counts: " + "; ".join(errors))
    return summary


def _write_split_lists(
    out: Path, train_aug: list[str], train: list[str], val: list[str], trainval: list[str], test: list[str]
) -> None:
    """The split lists of the prepared dataset, each sorted."""
    lists = {"train_aug": train_aug, "train": train, "val": val, "trainval": trainval, "test": test}
    for name, ids in lists.items():
        if ids or name != "test":  # a devkit without the test images has no test list
            write_split(out, name, sorted(ids))


def prepare_voc(
    voc: str | os.PathLike,
    sbd: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    images: str = "link",
    labels: str = "mask",
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> PrepareSummary:
    """Build the augmented VOC dataset at ``out`` (see the module docstring); returns the summary.

    ``sbd=None`` gives VOC alone (``train_aug`` = VOC train). Raises DataError naming the file for a
    missing image, mask or annotation, and for counts that disagree with the official releases. An ``out``
    holding files of another dataset is refused unless ``overwrite`` replaces them (``prepare.release_outputs``);
    a VOC dataset prepared there before is continued.
    """
    if labels not in ("auto", "xml", "mask"):
        raise UsageError(f"labels must be auto, xml or mask, got {labels!r}")
    voc_root = find_voc_root(voc)
    sbd_root = find_sbd_root(sbd) if sbd is not None else None
    out = Path(out)
    replaced = release_outputs(
        out,
        "voc",
        "wsss prepare voc",
        images=images,
        overwrite=overwrite,
        inputs={"--voc": voc_root, "--sbd": sbd_root},
    )
    voc_train, voc_val, voc_trainval, voc_test, sbd_train, sbd_val = _read_voc_lists(voc_root, sbd_root)
    remove_outputs(replaced)
    remove_stale_outputs(out, AUG_DIR, "JPEGImages")

    val_set = set(voc_val)
    train_aug = sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - val_set)
    labelled = sorted(set(train_aug) | set(voc_trainval))  # every id that gets a mask and a label

    jobs = _mask_jobs(labelled, voc_root, sbd_root, out)
    image_ids = sorted(set(labelled) | set(voc_test))
    sources = _image_sources(image_ids, voc_root, sbd_root)

    workers = default_workers() if workers is None else workers
    mask_labels = dict(parallel_map(_write_mask, jobs, workers=workers, desc="SegmentationClassAug", progress=progress))
    placed = 0
    if images != "none":
        from tqdm import tqdm

        for id in tqdm(image_ids, desc="JPEGImages", unit="img", disable=not progress, dynamic_ncols=True):
            placed += place_image(sources[id], per_id_path(out / "JPEGImages", id, ".jpg"), images)

    # Image-level labels for train_aug + val (the PSA / ToCo cls_labels.npy keys).
    table, use_xml = _image_labels(sorted(set(train_aug) | val_set), labels, voc_root, mask_labels)

    _write_split_lists(out, train_aug, voc_train, voc_val, voc_trainval, voc_test)
    write_cls_labels(out, table)
    write_classes(out, VOC_CLASSES)
    mark_prepared(out, "voc")

    counts = {
        "voc_train": len(voc_train),
        "voc_val": len(voc_val),
        "voc_test": len(voc_test),
        "sbd_train": len(sbd_train),
        "sbd_val": len(sbd_val),
        "train_aug": len(train_aug),
        "masks": len(jobs),
        "masks_from_voc": sum(j[1] == "voc" for j in jobs),
        "masks_from_sbd": sum(j[1] == "sbd" for j in jobs),
        "cls_labels": len(table),
        "images_placed": placed,
    }
    summary = _checked_summary(out, counts, use_xml, table)
    return summary
