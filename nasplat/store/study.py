"""The study store: an Optuna RDB study per search plus the experiment's state, in one database.

Every trial the driver starts is an Optuna trial of a two-objective study (whole-body AP up,
total GFLOPs down). Its user attributes carry what resume needs:

- `arch`: the arch JSON; `key`: `arch.key()`;
- `ask_seq`: how many results the searcher had been told when it proposed this arch (absent for a
  re-queued arch, which the searcher did not propose again);
- `requeued_from`: the trial a killed driver left running, whose arch this trial re-evaluates;
- `result`: `tell_seq` (the position of this result in the order results were told to the
  searcher) with the full `Evaluation` dict, or with `outcome` "failed" (retries exhausted, told
  to the searcher as a failure) and `error`; `outcome` "killed": left RUNNING by a dead driver,
  marked FAIL on recovery;
- `failed_attempts`: the attempts that failed and were retried on another evaluator, each
  `{"error", "lost"}` (`lost`: the evaluator itself died, e.g. with its node); not read on resume.

For Optuna's own tools (optuna-dashboard, `optuna.visualization`) a study opened with its space
also carries each trial's choices as params (one `CategoricalDistribution` per dimension, from
`arch_distributions`), the metric names `wholebody_AP` and `GFLOPs`, the constraint GFLOPs minus
budget (Optuna's trial system attr `constraints`, then one per part budget: each part's GFLOPs
minus its budget; <= 0 is feasible) and, as plain user attrs,
the per-part AP (`body_AP`, ...) and the parameter count `num_params`. Resume reads none of
them, so stores written before they existed resume the same. A trial's params and these attrs
are inserted with its result, in one transaction (`StudyStore._finish_rows`), not one Optuna
call each: a RUNNING trial shows only its `arch`.

Replaying asks and tells in that recorded order rebuilds any searcher exactly (see
`nasplat.search.base`). The driver is the only writer.

The experiment state (phase, supernet checkpoint, config hash, space fingerprint and the name of
the current study) is a row of the table `nasplat_experiment` in the same database.

Every operation on the database rides out a server that restarts or a SQLite file held locked,
and a corrupt or read-only file, or a stored value that cannot be read, is one StoreError (see
`nasplat.store.database`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, distribution_to_json
from optuna.trial import TrialState, create_trial

from nasplat.errors import NasplatError, StoreError
from nasplat.search.evaluation import DEFAULT_OBJECTIVE, Evaluation, Prediction
from nasplat.space import Arch, SearchSpace
from nasplat.store.database import create_engine, open_rdb_storage, retrying, store_error
from nasplat.store.redact import redact_url

DIRECTIONS = ("maximize", "minimize")  # the task's objective (whole-body AP for ZoomNAS), total GFLOPs
METRIC_NAMES = ("wholebody_AP", "GFLOPs")  # ZoomNAS's; `open_study(metric=)` names another task's objective
CONSTRAINTS_ATTR = "constraints"  # Optuna's trial system attr (`_CONSTRAINTS_KEY`): a list, <= 0 feasible
NEW_STUDY_FLAG = "--new-study"


def arch_distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    """One `CategoricalDistribution` per dimension of `space`, by flat name. A group dimension
    gets every group number any of its parent's channel choices allows, so each name has the
    same distribution in every trial of a study (Optuna requires that)."""
    return {d.name: CategoricalDistribution(d.choices) for d in space.dimensions}


def arch_params(arch: Arch, distributions: dict[str, CategoricalDistribution]) -> dict[str, Any]:
    """The arch's choices as Optuna params: each value as the equal choice of its distribution.
    Raises StoreError for a value that is not one of them."""
    params: dict[str, Any] = {}
    for name, value in arch.to_flat().items():
        choice = next((c for c in distributions[name].choices if abs(float(c) - float(value)) < 1e-6), None)
        if choice is None:
            raise StoreError(f"value {value!r} is not one of the study's choices", key=name)
        params[name] = choice
    return params


# The tables and columns Optuna's RDB storage reads params and trial attrs from. Its own calls take
# a transaction and about two queries per value (~0.7 ms each on SQLite, ~35 ms for 50 params even
# in one `create_new_trial`), so the store inserts a trial's rows with one statement per table.
_ROW_TABLES = {
    "trial_params": ("trial_id", "param_name", "param_value", "distribution_json"),
    "trial_user_attributes": ("trial_id", "key", "value_json"),
    "trial_system_attributes": ("trial_id", "key", "value_json"),
}


def _row_tables(engine: sa.engine.Engine) -> dict[str, sa.TableClause] | None:
    """Insertable forms of `_ROW_TABLES`, or None when the database's tables lack one of those
    columns (an Optuna schema this code does not know: the store then uses Optuna's calls)."""
    inspector = sa.inspect(engine)
    tables: dict[str, sa.TableClause] = {}
    for name, columns in _ROW_TABLES.items():
        try:
            present = {c["name"] for c in inspector.get_columns(name)}
        except sa.exc.NoSuchTableError:
            return None
        if not set(columns) <= present:
            return None
        tables[name] = sa.table(name, *(sa.column(c) for c in columns))
    return tables


@dataclass(frozen=True)
class StudyIdentity:
    """What must match for a stored study to be continued (n_trials may grow)."""

    space_fingerprint: str
    objective: str
    sampler: str
    seed: int
    budget_gflops: float | None
    sampler_settings: str = ""  # e.g. the evolution settings as JSON
    budget_latency_ms: float | None = None
    latency_device: str = ""  # the latency table's device fingerprint and description ("" without one)
    cost: str = "gflops"  # the searchers' cost objective: gflops | latency
    budget_parts: str = ""  # the GFLOPs budget of each part as JSON ("" without part budgets)
    predictor: str = ""  # `search.predictor` as JSON ("" without a predictor)

    @property
    def part_budgets(self) -> dict[str, float] | None:
        """The GFLOPs budget of each part (`SearchConfig.part_budgets`); None without part budgets."""
        return json.loads(self.budget_parts) if self.budget_parts else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudyIdentity:
        return cls(**json.loads(text))


_FLAG_NAMES = {
    "space_fingerprint": "space fingerprint",
    "objective": "objective",
    "sampler": "sampler",
    "seed": "search seed",
    "budget_gflops": "budget_gflops",
    "sampler_settings": "sampler settings",
    "budget_latency_ms": "budget_latency_ms",
    "latency_device": "latency table device",
    "cost": "cost objective",
    "budget_parts": "part budgets",
    "predictor": "predictor settings",
}


@dataclass(frozen=True)
class StoredTrial:
    """One trial as recorded in the store."""

    number: int
    state: str  # COMPLETE | FAIL | RUNNING | WAITING | PRUNED
    arch: Arch
    evaluation: Evaluation | None
    ask_seq: int | None
    tell_seq: int | None
    requeued_from: int | None
    outcome: str | None
    error: str | None
    started: float | None = None  # seconds since the epoch: when the trial was started (its evaluation dispatched)
    ended: float | None = None  # and when its result was stored
    prediction: Prediction | None = None  # the accuracy predictor's, when it picked this arch (not a result)

    @property
    def key(self) -> str:
        return self.arch.key()


@dataclass(frozen=True)
class ExperimentState:
    """A row of `nasplat_experiment`."""

    name: str
    phase: str | None = None  # e.g. "training", "trained", "searching", "searched"
    checkpoint: str | None = None  # supernet checkpoint path
    config_hash: str | None = None
    space_fingerprint: str | None = None
    study_name: str | None = None
    updated_at: str | None = None
    retrain_best: str | None = None  # JSON: the retrain sweep and its best trial
    stopped: str | None = None  # how the last command in `phase` ended early ("interrupted during search at T")


_metadata = sa.MetaData()
_experiment_table = sa.Table(
    "nasplat_experiment",
    _metadata,
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("phase", sa.String(64)),
    sa.Column("checkpoint", sa.Text),
    sa.Column("config_hash", sa.String(128)),
    sa.Column("space_fingerprint", sa.String(128)),
    sa.Column("study_name", sa.String(512)),
    sa.Column("updated_at", sa.String(64)),
    sa.Column("retrain_best", sa.Text),  # added later: an older store gets it when opened for writing
    sa.Column("stopped", sa.String(256)),  # added later, the same way
)


def _ensure_sqlite_dir(url: str) -> None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _tables(url: str) -> set[str]:
    """The tables of the database at `url`, found without creating anything (a SQLite file that
    is not there has none). Raises StoreError (URL redacted)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if not db or db == ":memory:" or not Path(db).expanduser().is_file():
            return set()
    try:
        engine = create_engine(url)
        try:
            return retrying(url, lambda _: set(sa.inspect(engine).get_table_names()))
        finally:
            engine.dispose()
    except Exception as e:  # noqa: BLE001 - any driver error becomes one redacted StoreError
        raise store_error(url, "cannot open the study database", e) from None


def store_exists(url: str) -> bool:
    """Whether nasplat has written to the database at `url` (experiment state or Optuna's
    tables), found without creating anything. Raises StoreError (URL redacted)."""
    return bool(_tables(url) & {"studies", _experiment_table.name})


class ExperimentStateStore:
    """Read and update experiment state rows; creates the table on first use (not when
    `read_only`: then a missing table reads as no rows and `update` is refused).

    Raises StoreError (URL redacted) when the database cannot be reached."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        try:
            if not read_only:
                _ensure_sqlite_dir(url)
            self._engine = create_engine(url)
            retrying(url, lambda _: self._open())
        except Exception as e:  # noqa: BLE001 - any driver error becomes one redacted StoreError
            raise store_error(url, "cannot open the study database", e) from None

    def _open(self) -> None:
        if self.read_only:
            self._has_table = _experiment_table.name in sa.inspect(self._engine).get_table_names()
        else:
            _metadata.create_all(self._engine)
            self._has_table = True
        self._columns = self._add_missing_columns() if self._has_table else []

    def _add_missing_columns(self) -> list[sa.Column]:
        """The table's columns that the database has; a store written by an older nasplat lacks
        the newer ones, which are added here (not when read-only: they then read as None)."""
        present = {c["name"] for c in sa.inspect(self._engine).get_columns(_experiment_table.name)}
        missing = [c for c in _experiment_table.columns if c.name not in present]
        if missing and not self.read_only:
            with self._engine.begin() as conn:
                for c in missing:
                    kind = c.type.compile(dialect=self._engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE {_experiment_table.name} ADD COLUMN "{c.name}" {kind}'))
            missing = []
        return [c for c in _experiment_table.columns if c not in missing]

    def get(self, name: str) -> ExperimentState | None:
        if not self._has_table:
            return None

        def read(_: int) -> ExperimentState | None:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(*self._columns).where(_experiment_table.c.name == name)).mappings().first()
            return ExperimentState(**dict(row)) if row else None

        try:
            return retrying(self.url, read)
        except StoreError:
            raise
        except sa.exc.SQLAlchemyError as e:
            raise store_error(self.url, "cannot read the experiment state", e) from None

    def update(self, name: str, **fields: str | None) -> ExperimentState:
        """Set the given fields of experiment `name` (creating its row). Raises StoreError for an
        unknown field."""
        allowed = {c.name for c in _experiment_table.columns} - {"name", "updated_at"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise StoreError(f"unknown experiment state field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        if self.read_only:
            raise StoreError("the study database was opened read-only", source=redact_url(self.url))
        before = self.get(name)
        if before is not None and all(getattr(before, k) == v for k, v in fields.items()):
            return before  # nothing changes: the database is not written
        values = dict(fields, updated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))

        def write(_: int) -> None:
            with self._engine.begin() as conn:
                exists = conn.execute(sa.select(_experiment_table.c.name).where(_experiment_table.c.name == name)).first()
                if exists:
                    conn.execute(_experiment_table.update().where(_experiment_table.c.name == name).values(**values))
                else:
                    conn.execute(_experiment_table.insert().values(name=name, **values))

        try:
            retrying(self.url, write)
        except StoreError:
            raise
        except sa.exc.SQLAlchemyError as e:
            raise store_error(self.url, "cannot write the experiment state", e) from None
        state = self.get(name)
        assert state is not None
        return state

    def dispose(self) -> None:
        self._engine.dispose()


class StudyStore:
    """The Optuna study of one search. Use `open_study` to get one."""

    def __init__(self, url: str, experiment: str, study: optuna.Study, identity: StudyIdentity,
                 space: SearchSpace | None = None, arch_type: type = Arch) -> None:
        self.url = url
        self.arch_type = getattr(space, "arch_type", arch_type)  # what its archs are read as
        self.experiment = experiment
        self.study = study
        self.identity = identity
        self._storage = study._storage
        self._ids: dict[int, int] = {t.number: t._trial_id for t in study.get_trials(deepcopy=False)}
        # params only when the space is known (the driver's store); readers need none
        self._distributions = arch_distributions(space) if space is not None else None
        self._dist_json = {k: distribution_to_json(d) for k, d in (self._distributions or {}).items()}
        # the RDB storage under Optuna's cache (which rereads unfinished trials, so rows written
        # before a trial finishes are seen); any other storage gets Optuna's calls
        found = getattr(getattr(self._storage, "_backend", self._storage), "engine", None)
        engine = found if isinstance(found, sa.engine.Engine) else None
        self._engine: sa.engine.Engine | None = engine
        self._tables = retrying(url, lambda _: _row_tables(engine)) if engine is not None else None
        self._params: dict[int, dict[str, Any]] = {}  # params of the trials this store started, until finished
        self._attempts: dict[int, list[dict[str, Any]]] = {}

    @property
    def study_name(self) -> str:
        return self.study.study_name

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    # --- attributes of the study ------------------------------------------------------------
    def set_attr(self, key: str, value: Any) -> None:
        """Set a study attribute; an unchanged value is not written."""
        if key not in self.study.user_attrs or self.study.user_attrs[key] != value:
            self.study.set_user_attr(key, value)

    def attrs(self) -> dict[str, Any]:
        return dict(self.study.user_attrs)

    # --- trials ----------------------------------------------------------------------------
    def start_trial(self, arch: Arch, *, ask_seq: int | None, requeued_from: int | None = None,
                    prediction: Prediction | None = None) -> int:
        """Record a RUNNING trial for `arch`; returns its number. Its params are written with its
        result (one transaction fewer per trial), or here where the store leaves rows to Optuna.
        `prediction`: what the accuracy predictor said when it picked `arch`, kept as the user attr
        `prediction` (with the candidates it screened out), never as the trial's values."""
        attrs: dict[str, Any] = {"arch": arch.to_json(), "key": arch.key()}
        if ask_seq is not None:
            attrs["ask_seq"] = ask_seq
        if requeued_from is not None:
            attrs["requeued_from"] = requeued_from
        if prediction is not None:
            attrs["prediction"] = prediction.to_dict()
        params = arch_params(arch, self._distributions) if self._distributions is not None else {}
        if params and self._tables is None:
            template = create_trial(state=TrialState.RUNNING, params=params, distributions=self._distributions,
                                    user_attrs=attrs)
        else:
            template = create_trial(state=TrialState.RUNNING, user_attrs=attrs)
        trial_id = self._storage.create_new_trial(self.study._study_id, template_trial=template)
        number = self._storage.get_trial_number_from_id(trial_id)
        self._ids[number] = trial_id
        if params and self._tables is not None:
            self._params[number] = params
        return number

    def complete_trial(self, number: int, evaluation: Evaluation, tell_seq: int) -> None:
        """Store the evaluation (and, for Optuna's tools, the params, the per-part AP, the
        parameter count and the constraints GFLOPs minus budget, the total's then each part's) and
        mark the trial COMPLETE with values (AP, GFLOPs)."""
        attrs: dict[str, Any] = {"result": {"tell_seq": tell_seq, "evaluation": evaluation.to_dict()}}
        attrs.update(evaluation.side_metrics())
        attrs["num_params"] = int(evaluation.params)
        budget = self.identity.budget_gflops
        limits = ({"total": budget} if budget is not None else {}) | (self.identity.part_budgets or {})
        system = {CONSTRAINTS_ATTR: [evaluation.gflops[k] - limit for k, limit in limits.items()]} if limits else {}
        self._finish_rows(number, attrs, system)
        self._storage.set_trial_state_values(self._ids[number], TrialState.COMPLETE,
                                             [evaluation.score, evaluation.total_gflops])

    def fail_trial(self, number: int, error: str, tell_seq: int) -> None:
        """Mark the trial FAIL for good (retries exhausted); the searcher was told."""
        self._finish_rows(number, {"result": {"tell_seq": tell_seq, "outcome": "failed", "error": error[:2000]}}, {})
        self._storage.set_trial_state_values(self._ids[number], TrialState.FAIL)

    def record_attempt(self, number: int, error: str, *, lost: bool) -> None:
        """Note a failed attempt of a RUNNING trial that is being retried (user attr
        `failed_attempts`)."""
        attempts = self._attempts.setdefault(number, [])
        attempts.append({"error": error[:500], "lost": lost})
        self._storage.set_trial_user_attr(self._ids[number], "failed_attempts", attempts)

    def _finish_rows(self, number: int, user: dict[str, Any], system: dict[str, Any]) -> None:
        """The params (kept since `start_trial`) and new user and system attrs of a RUNNING trial:
        one transaction where the tables are known, else one Optuna call per attr."""
        trial_id = self._ids[number]
        if self._tables is None:
            for key, value in user.items():
                self._storage.set_trial_user_attr(trial_id, key, value)
            for key, value in system.items():
                self._storage.set_trial_system_attr(trial_id, key, value)
            return
        params = self._params.pop(number, {})
        engine, tables = self._engine, self._tables
        assert engine is not None and (self._distributions is not None or not params)
        rows = {
            "trial_params": [{"trial_id": trial_id, "param_name": k, "distribution_json": self._dist_json[k],
                              "param_value": self._distributions[k].to_internal_repr(v)}  # type: ignore[index]
                             for k, v in params.items()],
            "trial_user_attributes": [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in user.items()],
            "trial_system_attributes": [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in system.items()],
        }

        def insert(attempt: int) -> None:
            with engine.begin() as conn:
                for name, values in rows.items():
                    if not values:
                        continue
                    t = tables[name]
                    if attempt:  # the failed attempt may have committed before its connection dropped
                        key = "param_name" if name == "trial_params" else "key"
                        conn.execute(t.delete().where(t.c.trial_id == trial_id, t.c[key].in_([v[key] for v in values])))
                    conn.execute(t.insert(), values)

        retrying(self.url, insert)

    def trials(self) -> list[StoredTrial]:
        """All trials in number order. Raises StoreError naming the study, the trial and the
        attribute for a stored value that cannot be read."""
        return [self._to_stored(t) for t in self.study.get_trials(deepcopy=False)]

    def _to_stored(self, t: optuna.trial.FrozenTrial) -> StoredTrial:
        attrs = t.user_attrs
        try:
            arch = self.arch_type.from_json(attrs["arch"])
        except (NasplatError, KeyError, TypeError, ValueError) as e:
            raise _unreadable(self.study_name, "arch", e, self.url, trial=t.number) from e
        try:
            result = attrs.get("result") or {}
            if not isinstance(result, dict):
                raise TypeError(f"{result!r} is not a JSON object")
            terminal = t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and result.get("outcome") == "failed")
            evaluation = None
            if t.state == TrialState.COMPLETE and "evaluation" in result:
                evaluation = Evaluation.from_dict(result["evaluation"])
        except (NasplatError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise _unreadable(self.study_name, "result", e, self.url, trial=t.number) from e
        try:
            prediction = Prediction.from_dict(attrs["prediction"], self.arch_type) if "prediction" in attrs else None
        except NasplatError as e:
            raise _unreadable(self.study_name, "prediction", e, self.url, trial=t.number) from e
        killed = attrs.get("outcome") == "killed"
        return StoredTrial(
            number=t.number,
            state=t.state.name,
            arch=arch,
            evaluation=evaluation,
            ask_seq=attrs.get("ask_seq"),
            tell_seq=result.get("tell_seq") if terminal and not killed else None,
            requeued_from=attrs.get("requeued_from"),
            outcome="killed" if killed else (result.get("outcome") if terminal else None),
            error=result.get("error"),
            started=t.datetime_start.timestamp() if t.datetime_start is not None else None,  # Optuna's naive local times
            ended=t.datetime_complete.timestamp() if t.datetime_complete is not None else None,
            prediction=prediction,
        )

    def recover(self) -> list[StoredTrial]:
        """Mark trials a dead driver left RUNNING (or WAITING) as FAIL with outcome "killed", and
        return the trials whose archs must be evaluated again: one per arch that has no COMPLETE
        or finally failed trial, in trial order."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            self._storage.set_trial_user_attr(t._trial_id, "outcome", "killed")
            self._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        stored = self.trials()
        done = {s.key for s in stored if s.tell_seq is not None}
        requeue: dict[str, StoredTrial] = {}
        for s in stored:
            if s.outcome == "killed" and s.key not in done and s.key not in requeue:
                requeue[s.key] = s
        return list(requeue.values())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False):
            out[t.state.name] = out.get(t.state.name, 0) + 1
        return out


def _study_names(storage: optuna.storages.BaseStorage) -> set[str]:
    return {s.study_name for s in storage.get_all_studies()}


def _studies_of(names: set[str], experiment: str) -> list[str]:
    """The studies of `experiment` (`name`, `name#2`, ...), oldest first."""
    def number(n: str) -> int:
        return 1 if n == experiment else int(n.rsplit("#", 1)[1])

    mine = [n for n in names if n == experiment or (n.startswith(f"{experiment}#") and n.rsplit("#", 1)[1].isdigit())]
    return sorted(mine, key=number)


def identity_differences(stored: StudyIdentity, current: StudyIdentity) -> list[tuple[str, Any, Any]]:
    """(field, stored value, current value) for every identity field that differs."""
    return [(f, getattr(stored, f), getattr(current, f)) for f in _FLAG_NAMES if getattr(stored, f) != getattr(current, f)]


def _check_identity(stored: StudyIdentity, current: StudyIdentity, study_name: str, url: str, others: str = "") -> None:
    for field, old, new in identity_differences(stored, current)[:1]:
        raise StoreError(
            f"study {study_name!r} was created with {_FLAG_NAMES[field]} {old!r}, this run has {new!r}{others}; "
            f"pass {NEW_STUDY_FLAG} to start a new study (the old one is kept)",
            source=redact_url(url),
            key=field,
        )


def _unreadable(study: str, key: str, e: BaseException, url: str, *, trial: int | None = None) -> StoreError:
    """The one line for a nasplat attribute that Optuna reads but nasplat cannot."""
    why = "it is missing" if isinstance(e, KeyError) else (str(e).splitlines()[0] if str(e) else type(e).__name__)
    where = f"study {study!r}: " + (f"trial {trial}: " if trial is not None else "")
    return StoreError(f"{where}user attr {key!r} cannot be read ({why}); the study cannot be read: repair that value, "
                      f"or start a new study with {NEW_STUDY_FLAG}", source=redact_url(url))


def _identity_of(study: optuna.Study, url: str, raw: Any) -> StudyIdentity:
    try:
        return StudyIdentity.from_json(raw)
    except (TypeError, ValueError) as e:
        raise _unreadable(study.study_name, "identity", e, url) from e


def _stored_identity(study: optuna.Study, url: str) -> StudyIdentity:
    raw = study.user_attrs.get("identity")
    if raw is None:
        raise StoreError(f"study {study.study_name!r} was not created by nasplat; pass {NEW_STUDY_FLAG} to start a new study",
                         source=redact_url(url))
    return _identity_of(study, url, raw)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage at `url` whose every call rides out a database that is away for a
    while (`nasplat.store.database`). Raises StoreError with the URL's password redacted."""
    try:
        _ensure_sqlite_dir(url)
    except OSError as e:
        raise store_error(url, "cannot open the study database", e) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_rdb_storage(url)


def open_study(url: str, experiment: str, identity: StudyIdentity, *, new_study: bool = False,
               study: str | None = None, space: SearchSpace | None = None,
               metric: str = DEFAULT_OBJECTIVE) -> StudyStore:
    """Open (or create) the study of `experiment` at `url` that matches `identity`.

    Which study: `study` when given (it must exist, unless `new_study` asks to create it under
    that name); else, unless `new_study`, the experiment's current study if its identity (space
    fingerprint, objective, sampler, seed, budget, sampler settings) matches, else the newest of
    its studies that does; else, when it has none yet, a new one named after it. `new_study`
    starts `<name>#2`, `#3`, ... (or `study`). The chosen study becomes current and gets the
    metric names (`metric`, the task's objective, and GFLOPs); with `space` (the study's), trials
    started record their choices as params (see the module docstring) and its archs are read as
    the space's `arch_type`. Raises
    StoreError when the database cannot be reached, when `study` does not exist, or when no
    study of the experiment matches (the message names the current one's difference and
    `--new-study`).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    states = ExperimentStateStore(url)
    storage = open_storage(url)
    try:
        row = states.get(experiment)
        names = _study_names(storage)
        mine = _studies_of(names, experiment)
        current = row.study_name if row and row.study_name in names else (mine[-1] if mine else None)
        chosen: optuna.Study | None = None
        if study is not None and study in names and not new_study:
            chosen = optuna.load_study(study_name=study, storage=storage)
            _check_identity(_stored_identity(chosen, url), identity, study, url)
        elif study is not None and not new_study:
            listed = ", ".join(repr(n) for n in mine) or "none"
            raise StoreError(f"no study {study!r} in the store (studies of {experiment!r}: {listed}); "
                             f"pass {NEW_STUDY_FLAG} to create it", source=redact_url(url), key="--study")
        elif current is not None and not new_study:
            # the current study first, then the others newest first: the first that matches
            order = [current] + [n for n in reversed(mine) if n != current]
            for name in order:
                candidate = optuna.load_study(study_name=name, storage=storage)
                raw = candidate.user_attrs.get("identity")
                if raw is not None and not identity_differences(_identity_of(candidate, url, raw), identity):
                    chosen = candidate
                    break
            if chosen is None:
                first = optuna.load_study(study_name=current, storage=storage)
                others = f" (and none of its other {len(mine) - 1} studies matches)" if len(mine) > 1 else ""
                _check_identity(_stored_identity(first, url), identity, current, url, others)
                chosen = first  # pragma: no cover - identical identities matched above
        if chosen is None:
            name = study if study is not None else experiment
            if name in names:
                if study is not None:
                    raise StoreError(f"study {study!r} already exists; drop {NEW_STUDY_FLAG} to resume it",
                                     source=redact_url(url), key="--study")
                k = max((int(n.rsplit("#", 1)[1]) for n in mine if "#" in n), default=1) + 1
                name = f"{experiment}#{k}"
            chosen = optuna.create_study(study_name=name, storage=storage, directions=list(DIRECTIONS))
            chosen.set_user_attr("identity", identity.to_json())
        metric_names = [metric, METRIC_NAMES[1]]
        if chosen.metric_names != metric_names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental before Optuna 4
                chosen.set_metric_names(metric_names)
        states.update(experiment, study_name=chosen.study_name, space_fingerprint=identity.space_fingerprint)
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001
        raise store_error(url, "cannot open the study", e) from None
    finally:
        states.dispose()
    return StudyStore(url, experiment, chosen, identity, space)


def load_current_study(url: str, experiment: str, study: str | None = None, *,
                       arch_type: type = Arch) -> StudyStore | None:
    """The current study of `experiment` (or the study named `study`) for reading, its archs read
    as `arch_type` (the space's), or None when there is none. Read-only: a missing database or
    table is not created. Raises StoreError."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "studies" not in _tables(url):
        if study is not None:
            raise StoreError(f"no study {study!r} in the store (it has no studies yet)", source=redact_url(url), key="--study")
        return None
    states = ExperimentStateStore(url, read_only=True)
    try:
        row = states.get(experiment)
    finally:
        states.dispose()
    storage = open_storage(url)
    names = _study_names(storage)
    mine = _studies_of(names, experiment)
    if study is not None:
        if study not in names:
            listed = ", ".join(repr(n) for n in mine) or "none"
            raise StoreError(f"no study {study!r} in the store (studies of {experiment!r}: {listed})",
                             source=redact_url(url), key="--study")
        current = study
    else:
        current = row.study_name if row and row.study_name in names else (mine[-1] if mine else None)
    if current is None:
        return None
    loaded = optuna.load_study(study_name=current, storage=storage)
    raw = loaded.user_attrs.get("identity")
    identity = _identity_of(loaded, url, raw) if raw else StudyIdentity("", "", "", 0, None)
    return StudyStore(url, experiment, loaded, identity, arch_type=arch_type)
