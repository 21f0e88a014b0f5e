"""`run_pipeline`: the whole job from Python, without typer (what `nasplat run` draws on the
terminal), on the tiny classification experiment (the fastest whole job)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from nasplat.config import load_experiment
from nasplat.errors import ConfigError, StoreError
from nasplat.orchestration.phases import Phase, Phases
from nasplat.orchestration.pipeline import run_pipeline
from nasplat.store.lease import ExperimentLease
from nasplat.tasks.classification.export import load_exported_classifier
from tests.tasks.conftest import write_classify_experiment

SEARCH = {"sampler": "random", "n_trials": 4, "num_evaluators": 1, "seed": 2}


@pytest.mark.e2e
def test_a_python_caller_runs_the_whole_job_and_a_second_call_resumes_it_without_new_work(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exp = load_experiment(write_classify_experiment(tmp_path, tmp_path / "data", search=SEARCH))
    with caplog.at_level(logging.INFO, logger="nasplat.orchestration.pipeline"):
        done = run_pipeline(exp, track=False)
    phases = [m[0] for m in caplog.messages if re.match(r"\d/4 ", m)]
    assert phases == ["1", "2", "3", "4"]  # the four phases, announced in order
    assert done.search.n_complete == SEARCH["n_trials"] and done.retrain is None and done.version is None
    best = done.search.best
    assert best is not None and best.evaluation.score == max(t.evaluation.score for t in done.search.trials)
    assert done.export_meta["arch"] == best.arch.to_flat() and done.export_meta["task"] == "classification"
    assert load_exported_classifier(done.export_dir) is not None
    assert Phases(exp).current().phase == Phase.EXPORTED.value
    stamp = (done.export_dir / "meta.json").stat().st_mtime_ns
    again = run_pipeline(exp, track=False)  # everything done: read, not redone
    assert again.search.best.number == best.number and len(again.search.trials) == len(done.search.trials)
    assert (done.export_dir / "meta.json").stat().st_mtime_ns == stamp


def test_the_pipeline_stops_before_writing_for_bad_input_and_for_a_second_driver(tmp_path: Path) -> None:
    path = write_classify_experiment(tmp_path / "a", tmp_path / "data", search={**SEARCH, "budget_latency_ms": 3.0})
    with pytest.raises(ConfigError) as e:
        run_pipeline(load_experiment(path), track=False)
    assert e.value.key == "search.budget_latency_ms" and not (tmp_path / "a" / "out").exists()

    exp = load_experiment(write_classify_experiment(tmp_path / "b", tmp_path / "data", search=SEARCH))
    with ExperimentLease(exp.storage_url, exp.name, source=str(exp.path)):
        with pytest.raises(StoreError):
            run_pipeline(exp, track=False)
    assert not (exp.output_dir / "checkpoints").exists()
