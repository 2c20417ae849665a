"""Fixtures of the end-to-end fault tests (a test file's own fixture of the same name wins)."""

from __future__ import annotations

import pytest

from faults_helpers import copy_dataset, make_run_dir


@pytest.fixture
def data(synth_root, tmp_path):
    """A copy of the synthetic dataset that the test may damage."""
    return copy_dataset(synth_root, tmp_path)


@pytest.fixture
def run_dir(data, tmp_path):
    """A run folder (config.yaml + an untrained last.pt that fits the dataset), no training needed."""
    return make_run_dir(data, tmp_path)
