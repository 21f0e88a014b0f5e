from __future__ import annotations

import os
from dataclasses import replace as dataclasses_replace

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


def _optuna_view(url: str, name: str = "exp"):  # noqa: ANN202 - the study as Optuna's own tools load it
    import optuna

    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.parametrize("rows", [True, False], ids=["one-insert", "optuna-calls"])
def test_trials_carry_params_names_constraints_for_optuna_tools(tmp_path, monkeypatch, rows) -> None:  # noqa: ANN001
    """What optuna-dashboard reads: params with one CategoricalDistribution per dimension (the
    same for a group dimension whatever its channels), metric names, the constraint GFLOPs minus
    budget, per-part AP and the parameter count; the same whether the store inserts the rows
    itself or leaves them to Optuna's calls."""
    import nasplat.store.study as study_mod
    from nasplat.store import METRIC_NAMES, arch_distributions

    if not rows:
        monkeypatch.setattr(study_mod, "_row_tables", lambda engine: None)
    space = load_space(SPACE)
    obj = AnalyticObjective(space)
    url = f"sqlite:///{tmp_path}/study.db"
    store = open_study(url, "exp", _identity(), space=space)
    big, small = space.max_arch(), space.min_arch()
    assert big.to_flat()["body.stage1.groups"] != small.to_flat()["body.stage1.groups"]
    n1, n2, n3 = (store.start_trial(a, ask_seq=0) for a in (big, small, small))
    store.complete_trial(n1, obj.evaluate(big), tell_seq=0)
    store.complete_trial(n2, obj.evaluate(small), tell_seq=1)
    store.fail_trial(n3, "boom", tell_seq=2)
    view = _optuna_view(url)
    assert view.metric_names == list(METRIC_NAMES)
    t1, t2, t3 = view.get_trials()
    expected = arch_distributions(space)
    assert len(expected) == len(big.to_flat())
    for t, arch in ((t1, big), (t2, small), (t3, small)):
        assert t.distributions == expected
        assert t.params == pytest.approx(arch.to_flat())
    ev = obj.evaluate(big)
    assert t1.values == pytest.approx([ev.ap, ev.total_gflops])
    assert t1.system_attrs["constraints"] == pytest.approx([ev.total_gflops - 0.1])
    assert t1.user_attrs["num_params"] == ev.params and t1.user_attrs["face_AP"] == ev.metrics["face"]["AP"]
    assert "wholebody_AP" not in t1.user_attrs
    assert (t1.system_attrs["constraints"][0] <= 0) == (ev.total_gflops <= 0.1)
    assert "constraints" not in t3.system_attrs and t3.state.name == "FAIL"
    # resume reads what it read before
    stored = open_study(url, "exp", _identity(), space=space).trials()
    assert [s.evaluation for s in stored[:2]] == [ev, obj.evaluate(small)]
    assert stored[2].outcome == "failed" and stored[2].error == "boom"


def test_a_store_written_before_params_still_resumes(tmp_path) -> None:  # noqa: ANN001
    """A study whose trials have no params, metric names, constraints or per-part attrs (what the
    store wrote before them), with one trial left RUNNING by a dead driver, resumes: the killed
    arch is evaluated again, the search reaches its budget with each arch once, in the order of
    an uninterrupted search, and the new trials carry params."""
    import sqlalchemy as sa

    from nasplat.config import SearchConfig
    from nasplat.orchestration import driver
    from nasplat.search import AnalyticFactory

    space = load_space(SPACE)
    search = SearchConfig(sampler="random", n_trials=4, budget_gflops=0.1, seed=1, objective="analytic")
    url, ref_url = f"sqlite:///{tmp_path}/old.db", f"sqlite:///{tmp_path}/ref.db"
    driver.drive(space, search, AnalyticFactory(str(SPACE)), study="exp", storage_url=url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # back to the older form: what the store wrote before
        conn.execute(sa.text("DELETE FROM trial_params"))
        conn.execute(sa.text("DELETE FROM trial_system_attributes"))
        conn.execute(sa.text("DELETE FROM study_system_attributes"))
        conn.execute(sa.text("DELETE FROM trial_user_attributes WHERE key NOT IN ('arch', 'key', 'ask_seq', 'result')"))
        last = conn.execute(sa.text("SELECT max(trial_id) FROM trials")).scalar_one()
        conn.execute(sa.text("DELETE FROM trial_values WHERE trial_id = :t"), {"t": last})
        conn.execute(sa.text("DELETE FROM trial_user_attributes WHERE trial_id = :t AND key = 'result'"), {"t": last})
        conn.execute(sa.text("UPDATE trials SET state = 'RUNNING', datetime_complete = NULL WHERE trial_id = :t"), {"t": last})
    engine.dispose()
    old = _optuna_view(url)
    assert all(t.params == {} for t in old.get_trials()) and old.metric_names is None
    assert old.get_trials()[-1].state.name == "RUNNING"

    more = dataclasses_replace(search, n_trials=7)
    result = driver.drive(space, more, AnalyticFactory(str(SPACE)), study="exp", storage_url=url)
    ref = driver.drive(space, more, AnalyticFactory(str(SPACE)), study="exp", storage_url=ref_url)
    assert result.n_complete == 7
    done = [t for t in result.trials if t.state == "COMPLETE"]
    assert len({t.key for t in done}) == 7
    order = lambda ts: [t.key for t in sorted((t for t in ts if t.state == "COMPLETE"), key=lambda t: t.tell_seq)]  # noqa: E731
    assert sorted(order(result.trials)) == sorted(order(ref.trials))
    killed = [t for t in result.trials if t.outcome == "killed"]
    assert len(killed) == 1 and any(t.requeued_from == killed[0].number for t in done)
    view = _optuna_view(url).get_trials()
    assert all(t.params == {} for t in view[:4]) and all(len(t.params) == len(space.dimensions) for t in view[4:])
    assert _optuna_view(url).metric_names == ["wholebody_AP", "GFLOPs"]


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


def test_a_changed_part_budget_is_another_study(tmp_path) -> None:  # noqa: ANN001
    """The part budgets are part of the identity (a change, or dropping them, refuses to resume
    without --new-study), and each trial's constraints hold the total's then each part's excess."""
    from nasplat.config import SearchConfig
    from nasplat.orchestration.driver import identity_of

    space = load_space(SPACE)
    search = SearchConfig(sampler="random", budget_gflops={"body": 0.06, "hand": 0.01, "total": 0.1})
    identity = identity_of(space, search)
    assert identity.budget_gflops == 0.1 and identity.part_budgets == {"body": 0.06, "hand": 0.01}
    url = f"sqlite:///{tmp_path}/study.db"
    store = open_study(url, "exp", identity, space=space)
    arch = space.max_arch()
    evaluation = AnalyticObjective(space).evaluate(arch)
    store.complete_trial(store.start_trial(arch, ask_seq=0), evaluation, tell_seq=0)
    g = evaluation.gflops
    assert _optuna_view(url).get_trials()[0].system_attrs["constraints"] == pytest.approx(
        [g["total"] - 0.1, g["body"] - 0.06, g["hand"] - 0.01])
    changed = identity_of(space, dataclasses_replace(search, budget_gflops={"body": 0.06, "hand": 0.02, "total": 0.1}))
    for other in (changed, dataclasses_replace(identity, budget_parts="")):
        with pytest.raises(StoreError, match="created with part budgets .*--new-study") as info:
            open_study(url, "exp", other)
        assert info.value.key == "budget_parts"
    assert open_study(url, "exp", changed, new_study=True).study_name == "exp#2"
    assert open_study(url, "exp", identity).study_name == "exp"  # the original budgets reach their study


def test_a_study_stored_before_part_budgets_resumes(tmp_path) -> None:  # noqa: ANN001
    """An identity written without `budget_parts` (an older nasplat) reads as no part budgets and
    matches a search without them."""
    import json

    url = f"sqlite:///{tmp_path}/study.db"
    assert open_study(url, "exp", _identity()).study_name == "exp"
    old = {k: v for k, v in json.loads(_identity().to_json()).items() if k != "budget_parts"}
    _optuna_view(url).set_user_attr("identity", json.dumps(old))
    assert StudyIdentity.from_json(json.dumps(old)).part_budgets is None
    assert open_study(url, "exp", _identity()).study_name == "exp"
