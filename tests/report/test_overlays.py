"""The overlays of a folder of masks and their contact sheet (wsss.report.overlays), as the route writes them."""

import json

import numpy as np
from PIL import Image

from wsss.report.overlays import write_mask_overlays
from wsss.runs.stamps import SOURCES_FILE
from wsss.utils.io import read_image, save_label_png

NAMES = ["background", "cat", "dog"]


def test_each_mask_over_its_photo_and_one_page_with_the_legend(tmp_path):
    masks, photos = tmp_path / "masks", tmp_path / "photos"
    masks.mkdir(), photos.mkdir()
    images = {}
    for k, (i, shape) in enumerate([("a", (40, 60)), ("b", (30, 30)), ("c", (20, 20))]):
        label = np.zeros(shape, np.uint8)
        label[: shape[0] // 2] = k + 1 if k < 2 else 0  # a: cat, b: dog, c: background only
        save_label_png(masks / f"{i}.png", label)
        images[i] = photos / f"{i}.jpg"
        Image.fromarray(np.full((*shape, 3), 128, np.uint8)).save(images[i])
    save_label_png(masks / "orphan.png", np.zeros((4, 4), np.uint8))  # no photo named: no overlay
    page = write_mask_overlays(masks, images, NAMES, tmp_path / "report" / "masks.html")
    overlay = masks / "overlay"
    assert sorted(p.name for p in overlay.glob("*.jpg")) == ["a.jpg", "b.jpg", "c.jpg"]
    a = read_image(overlay / "a.jpg")
    assert a.shape == (40, 60, 3) and abs(int(a[35, 30, 0]) - 128) < 8  # the background keeps the photo
    assert sorted(json.loads((overlay / SOURCES_FILE).read_text())) == ["a", "b", "c"]
    text = page.read_text()
    assert 'src="../masks/overlay/a.jpg"' in text and "c: background only" in text
    assert text.count("class=key") == 2 and ">cat</span>" in text and ">dog</span>" in text


def test_a_large_photo_is_shrunk_with_its_mask(tmp_path, monkeypatch):
    import wsss.report.overlays as overlays

    monkeypatch.setattr(overlays, "OVERLAY_MAX_SIDE", 32)
    save_label_png(tmp_path / "big.png", np.ones((64, 128), np.uint8))
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(tmp_path / "big.jpg")
    write_mask_overlays(tmp_path, {"big": tmp_path / "big.jpg"}, NAMES, tmp_path / "masks.html")
    assert read_image(tmp_path / "overlay" / "big.jpg").shape == (16, 32, 3)
