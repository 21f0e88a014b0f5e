"""A latency search records its table's device in the study identity: resuming it with a table
of another device refuses to mix; a latency search without a table is one ConfigError."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nasplat.config import SearchConfig
from nasplat.errors import ConfigError, StoreError
from nasplat.latency import LatencyPredictor
from nasplat.orchestration import driver
from nasplat.search import AnalyticFactory, LatencyCost
from nasplat.space import load_space
from tests.latency._tables import synthetic_table

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


def test_resuming_with_a_table_of_another_device_is_refused(tmp_path: Path) -> None:
    space = load_space(SPACE)
    predictor = LatencyPredictor(synthetic_table(space), space)
    fastest = predictor.fastest()[1]
    search = SearchConfig(sampler="random", n_trials=2, objective="analytic", budget_latency_ms=fastest * 2)
    url = f"sqlite:///{tmp_path}/study.db"
    here = LatencyCost(predict=predictor, fastest_ms=fastest, device="cpu A", fingerprint="aaaa")
    result = driver.drive(space, search, AnalyticFactory(str(SPACE)), study="exp", storage_url=url, latency=here)
    assert result.n_complete == 2
    elsewhere = dataclasses.replace(here, device="cpu B", fingerprint="bbbb")
    more = dataclasses.replace(search, n_trials=3)
    with pytest.raises(StoreError, match="latency table device"):
        driver.open_search(space, more, study="exp", storage_url=url, latency=elsewhere)
    loop = driver.open_search(space, more, study="exp", storage_url=url, latency=here)  # same device: resumes
    assert loop.n_complete == 2


def test_a_latency_search_needs_a_table(tmp_path: Path) -> None:
    search = SearchConfig(sampler="random", n_trials=2, objective="analytic", budget_latency_ms=5.0)
    with pytest.raises(ConfigError, match="latency table"):
        driver.open_search(load_space(SPACE), search, study="exp", storage_url=f"sqlite:///{tmp_path}/s.db")
    assert not (tmp_path / "s.db").exists()
