from __future__ import annotations

import os

import pytest

from nasplat.errors import StoreError
from nasplat.search import AnalyticObjective
from nasplat.space import load_space
from nasplat.store import StudyIdentity, open_study
from tests.store.conftest import SPACE


def _identity(**kw):  # noqa: ANN003, ANN202
    base = dict(space_fingerprint="abc", objective="analytic", sampler="random", seed=0, budget_gflops=0.1)
    base.update(kw)
    return StudyIdentity(**base)


def _store_roundtrip(url: str) -> None:
    space = load_space(SPACE)
    obj = AnalyticObjective(space)
    store = open_study(url, "exp", _identity())
    a, b = space.max_arch(), space.min_arch()
    n1 = store.start_trial(a, ask_seq=0)
    n2 = store.start_trial(b, ask_seq=0)
    store.complete_trial(n1, obj.evaluate(a), tell_seq=0)
    # a new driver opens the same study: trial n2 was left RUNNING
    again = open_study(url, "exp", _identity())
    requeue = again.recover()
    assert [t.number for t in requeue] == [n2]
    trials = {t.number: t for t in again.trials()}
    assert trials[n1].state == "COMPLETE" and trials[n1].evaluation == obj.evaluate(a)
    assert trials[n2].state == "FAIL" and trials[n2].outcome == "killed"
    n3 = again.start_trial(b, ask_seq=None, requeued_from=n2)
    again.complete_trial(n3, obj.evaluate(b), tell_seq=1)
    assert open_study(url, "exp", _identity()).recover() == []
    with pytest.raises(StoreError, match="--new-study") as info:
        open_study(url, "exp", _identity(space_fingerprint="other"))
    assert info.value.key == "space_fingerprint"
    with pytest.raises(StoreError, match="objective"):
        open_study(url, "exp", _identity(objective="wholebody"))
    fresh = open_study(url, "exp", _identity(objective="wholebody"), new_study=True)
    assert fresh.study_name == "exp#2" and fresh.trials() == []
    # the new study is now current; the old one is kept
    assert open_study(url, "exp", _identity(objective="wholebody")).study_name == "exp#2"


def test_sqlite_store_resume_and_identity(tmp_path) -> None:  # noqa: ANN001
    _store_roundtrip(f"sqlite:///{tmp_path}/sub/study.db")


@pytest.mark.postgres
def test_postgres_store_resume_and_identity() -> None:
    url = os.environ.get("NASPLAT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("NASPLAT_TEST_POSTGRES_URL is not set")
    import uuid

    import sqlalchemy as sa

    name = f"nasplat_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        _store_roundtrip(str(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_store_written_before_the_retrain_column_still_opens(tmp_path):
    """An experiment table without `retrain_best` (an older nasplat) reads, read-only, with the
    column as None, and gets the column when opened for writing."""
    import sqlalchemy as sa

    from nasplat.store import ExperimentStateStore

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE nasplat_experiment (name VARCHAR(512) PRIMARY KEY, phase VARCHAR(64), "
                             "checkpoint TEXT, config_hash VARCHAR(128), space_fingerprint VARCHAR(128), "
                             "study_name VARCHAR(512), updated_at VARCHAR(64))"))
        conn.execute(sa.text("INSERT INTO nasplat_experiment (name, phase) VALUES ('old', 'searched')"))
    engine.dispose()
    reader = ExperimentStateStore(url, read_only=True)
    state = reader.get("old")
    reader.dispose()
    assert state.phase == "searched" and state.retrain_best is None
    writer = ExperimentStateStore(url)
    writer.update("old", phase="retrained", retrain_best='{"sweep": "s"}')
    writer.dispose()
    reader = ExperimentStateStore(url, read_only=True)
    assert reader.get("old").retrain_best == '{"sweep": "s"}' and reader.get("old").phase == "retrained"
    reader.dispose()
