"""A latency search logs each trial's predicted latency and a Pareto figure against latency."""

from __future__ import annotations

from pathlib import Path

from nasplat.config import SearchConfig
from nasplat.latency import LatencyPredictor
from nasplat.orchestration.driver import drive
from nasplat.search import AnalyticFactory, LatencyCost
from nasplat.space import load_space
from nasplat.tracking import MlflowTracker
from tests.latency._tables import synthetic_table

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


def test_trials_carry_predicted_latency_and_the_front_is_drawn_in_latency(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    space = load_space(SPACE)
    predictor = LatencyPredictor(synthetic_table(space), space)
    fastest = predictor.fastest()[1]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search = SearchConfig(sampler="random", n_trials=4, objective="analytic", budget_latency_ms=fastest * 2)
    latency = LatencyCost(predict=predictor, fastest_ms=fastest, device="cpu", fingerprint="f")
    result = drive(space, search, AnalyticFactory(str(SPACE)), study="lat", storage_url=f"sqlite:///{tmp_path}/s.db",
                   tracker=MlflowTracker(uri, "lat", tmp_path / "art", latency=predictor), latency=latency)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lat").experiment_id])
    children = {int(r.data.tags["nasplat.trial"]): r for r in runs if r.data.tags.get("nasplat.role") == "trial"}
    assert len(children) == 4
    for t in result.trials:
        assert children[t.number].data.metrics["latency_ms"] == predictor(t.arch)
    parent = next(r for r in runs if r.data.tags.get("nasplat.role") == "search")
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front_latency.png", "pareto_front_latency.html"} <= names
    assert parent.data.params["budget_latency_ms"] == str(fastest * 2)
