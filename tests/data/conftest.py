"""A small synthetic data set shared by the data tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasplat.data.synth import generate_dataset


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 24, 8, seed=7)
    return root
