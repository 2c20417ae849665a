"""``wsss.pipelines.route.RouteOptions``, the library API of ``wsss route``: a path may be a Path and one path or
word a list of one; a value of another type is a UsageError naming the option, before the route reads anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsss.core.errors import UsageError
from wsss.pipelines.route_values import RouteOptions


def test_paths_and_single_values_are_read_as_the_route_reads_them(tmp_path):
    opts = RouteOptions(
        data=tmp_path / "data",
        out=tmp_path / "out",
        images=str(tmp_path / "new"),
        overrides="run.seed=1",
        labels=tmp_path / "labels.csv",
    )
    assert (opts.data, opts.out, opts.labels) == (
        str(tmp_path / "data"),
        str(tmp_path / "out"),
        str(tmp_path / "labels.csv"),
    )
    assert opts.images == [str(tmp_path / "new")]  # one folder, not its characters ("/" scanned)
    assert opts.overrides == ["run.seed=1"]
    assert RouteOptions(data="d", out="o", overrides=None).overrides == ()
    assert RouteOptions(data="d", out="o", images=[tmp_path, "b.jpg"]).images == [str(tmp_path), "b.jpg"]


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("folds", "2", "an integer"),
        ("folds", True, "an integer"),
        ("rounds", 1.5, "an integer"),
        ("out", None, "a path"),
        ("data", 3, "a path"),
        ("overrides", 5, "a list of words"),
        ("images", [Path("a"), 2], "a list of paths"),
        ("overwrite", "yes", "True or False"),
        ("stage", None, "a string"),
        ("crf_workers", "4", "an integer"),
    ],
)
def test_a_value_of_another_type_is_one_usage_error_naming_the_option(field, value, want):
    given = {"data": "d", "out": "o", field: value}
    with pytest.raises(UsageError, match=rf"^RouteOptions\.{field}: expected {want}, got "):
        RouteOptions(**given)
