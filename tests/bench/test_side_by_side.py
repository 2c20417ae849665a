"""bench/side_by_side.py: what the official-code benchmarks time and how they pick a round."""

import sys

import pytest

import bench.side_by_side as side


def test_photo_copies_keeps_the_photos_first_and_names_each_copy_once():
    pairs = side.photo_copies(["a", "b"], 3)
    assert pairs == [("a", "a"), ("b", "b"), ("a_c1", "a"), ("b_c1", "b"), ("a_c2", "a"), ("b_c2", "b")]
    assert len({id for id, _ in pairs}) == len(pairs)
    assert side.photo_copies(["a"], 1) == [("a", "a")]


def test_fastest_compares_cpu_time_on_the_cpu_and_wall_time_on_a_gpu():
    slow_wall, slow_cpu = side.Timing(9.0, 1.0, None), side.Timing(2.0, 5.0, None)
    assert side.fastest(slow_wall, slow_cpu, gpu=False) is slow_wall  # least CPU
    assert side.fastest(slow_wall, slow_cpu, gpu=True) is slow_cpu  # least wall
    assert side.fastest(slow_cpu, None, gpu=False) is slow_cpu  # the first round


def test_timed_counts_the_child_cpu_time_and_stops_on_a_failure(tmp_path):
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    t = side.timed([sys.executable, "-c", busy], tmp_path, {})
    assert t.cpu >= 0.3 and t.wall >= t.cpu * 0.5 and t.gpu_gib is None
    with pytest.raises(SystemExit, match="no such photo"):
        side.timed([sys.executable, "-c", "import sys; sys.exit('no such photo')"], tmp_path, {})


def test_write_voc_copies_makes_a_dataset_wsss_reads_with_each_copy_labelled_as_its_photo(tmp_path):
    from conftest import REPO
    from wsss.data import VOCDataset

    data = REPO / "tests" / "assets" / "voc-real-mini"
    made = side.write_voc_copies(data, tmp_path, copies=2)
    photos = sorted(p.stem for p in (data / "JPEGImages").glob("*.jpg"))
    assert [c.id for c in made] == photos + [f"{p}_c1" for p in photos]
    ds = VOCDataset(tmp_path, "all")
    assert ds.ids == [c.id for c in made] and VOCDataset(tmp_path, "two").ids == ds.ids[:2]
    for c in made:
        photo = c.id.removesuffix("_c1")
        assert (tmp_path / "JPEGImages" / f"{c.id}.jpg").resolve() == (data / "JPEGImages" / f"{photo}.jpg").resolve()
        assert (ds.load_mask(c.id) == c.mask).all() and (ds.labels(c.id) == c.labels).all() and c.labels.any()
