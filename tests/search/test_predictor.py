"""The accuracy predictors: the arch encoding, the predictor contract over every registered
predictor, and the acquisition rule."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nasplat.config import PredictorConfig
from nasplat.errors import ArchError, NasplatError
from nasplat.metrics.ranking import kendall_tau
from nasplat.search import AnalyticObjective
from nasplat.search.predictor import (
    PREDICTORS,
    GaussianProcess,
    MLPEnsemble,
    encode,
    Screen,
    encode_many,
    expected_hypervolume_improvement,
    expected_improvement,
    make_predictor,
    pick,
)
from nasplat.search.pareto import hypervolume
from nasplat.space import SearchSpace, load_space

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
CPU_SMALL = load_space(SPACES / "cpu_small.yaml")

# Kendall tau on 200 held-out random archs of cpu_small after fitting on 100, the analytic
# objective's whole-body AP, default settings. Measured over data and predictor seeds 0-9 on 2
# cores: mlp_ensemble 0.771-0.811 (median 0.792), gp 0.792-0.834 (median 0.806); seed 0, which
# the test uses: 0.811 and 0.827. The bound leaves a margin below the worst seed.
MIN_TAU = {"mlp_ensemble": 0.70, "gp": 0.70}


def _distinct_archs(space: SearchSpace, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    archs: dict[str, object] = {}
    for _ in range(50 * n):  # bounded: the spaces here hold far more than n archs
        arch = space.sample(rng)
        archs.setdefault(arch.key(), arch)
        if len(archs) == n:
            break
    assert len(archs) == n
    return list(archs.values())


def _ap(archs: list) -> np.ndarray:
    objective = AnalyticObjective(CPU_SMALL)
    return np.array([objective.metrics(a)["wholebody"]["AP"] for a in archs])


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """100 training and 200 held-out distinct random archs of cpu_small, encoded, with their AP."""
    archs = _distinct_archs(CPU_SMALL, 300, seed=0)
    x, y = encode_many(CPU_SMALL, archs), _ap(archs)
    return x[:100], y[:100], x[100:], y[100:]


@pytest.fixture(scope="module")
def fitted(data) -> dict:  # noqa: ANN001
    x, y, _, _ = data
    return {name: cls(seed=0).fit(x, y) for name, cls in PREDICTORS.items()}


# --- encoding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("file", ["quickstart.yaml", "cpu_small.yaml"])
def test_the_encoding_is_one_number_in_0_1_per_dimension_and_tells_archs_apart(file: str) -> None:
    space = load_space(SPACES / file)
    archs = _distinct_archs(space, 300, seed=1) + [space.min_arch(), space.max_arch()]
    x = encode_many(space, archs)
    assert x.shape == (len(archs), len(space.dimensions)) and x.dtype == np.float64
    assert x.min() >= 0.0 and x.max() <= 1.0
    keys = {a.key() for a in archs}
    assert len({row.tobytes() for row in x}) == len(keys)  # distinct archs, distinct codes
    assert np.array_equal(encode(space, archs[0]), x[0])
    assert np.array_equal(encode_many(space, archs), x)  # deterministic
    # the dependent group dimensions are columns of their own and vary with the arch
    groups = [j for j, d in enumerate(space.dimensions) if d.depends_on is not None and len(d.choices) > 1]
    assert groups and all(len(np.unique(x[:, j])) > 1 for j in groups)
    assert encode_many(space, []).shape == (0, len(space.dimensions))


def test_a_group_number_has_one_code_whatever_channels_it_divides() -> None:
    names = [d.name for d in CPU_SMALL.dimensions]
    flat = CPU_SMALL.min_arch().to_flat()
    codes = {}
    for channels in (8, 16):
        flat.update({"body.branch1.channels": channels, "body.branch1.groups": 2})
        codes[channels] = encode(CPU_SMALL, CPU_SMALL.decode(flat))
    differ = [names[j] for j in np.flatnonzero(codes[8] != codes[16])]
    assert differ == ["body.branch1.channels"]
    assert codes[8][names.index("body.branch1.groups")] == 0.5  # 2 among the choices 1, 2, 4


def test_an_arch_outside_the_space_is_an_arch_error() -> None:
    quickstart = load_space(SPACES / "quickstart.yaml")
    with pytest.raises(ArchError) as info:
        encode(quickstart, CPU_SMALL.min_arch())  # 16 stem channels: quickstart has 24 and 32
    assert info.value.key == "body.stem.channels"


# --- the predictor contract ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_a_fitted_predictor_ranks_held_out_archs(name: str, data, fitted) -> None:  # noqa: ANN001
    _, _, x_test, y_test = data
    mean, std = fitted[name].predict(x_test)
    assert mean.shape == std.shape == (len(x_test),)
    tau = kendall_tau(mean, y_test)
    assert tau >= MIN_TAU[name], f"{name}: Kendall tau {tau:.3f} on 200 held-out archs"
    assert np.all(std > 0)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_the_same_seed_and_data_give_the_same_predictions_bit_for_bit(name: str, data, fitted) -> None:  # noqa: ANN001
    x, y, x_test, _ = data
    again = PREDICTORS[name](seed=0).fit(x, y)
    for a, b in zip(fitted[name].predict(x_test), again.predict(x_test)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_the_uncertainty_grows_away_from_the_data(name: str) -> None:
    """Fitted on archs with eight dimensions at their smallest choice, a predictor is less sure of
    archs with those at their largest. Measured here (mean std at the training / far archs):
    mlp_ensemble 0.0024 / 0.0050, gp 0.0002 / 0.038; over other seeds the ensemble's ratio was
    1.6-1.9."""
    keys = ["body.resolution", "body.stem.channels", "body.stage1.depth", "body.stage3.depth",
            "face.resolution", "hand.resolution", "face.feature_stage", "hand.feature_stage"]
    low = CPU_SMALL.pinned({k: min(CPU_SMALL.choices_for(k)) for k in keys})
    high = CPU_SMALL.pinned({k: max(CPU_SMALL.choices_for(k)) for k in keys})
    train, far = _distinct_archs(low, 100, seed=2), _distinct_archs(high, 100, seed=3)
    predictor = PREDICTORS[name](seed=0).fit(encode_many(CPU_SMALL, train), _ap(train))
    at_train = predictor.predict(encode_many(CPU_SMALL, train))[1].mean()
    away = predictor.predict(encode_many(CPU_SMALL, far))[1].mean()
    assert away > 1.2 * at_train, (name, at_train, away)


def test_the_gp_is_surer_at_its_training_points_than_at_new_archs(data, fitted) -> None:  # noqa: ANN001
    """Measured on seed 0: mean std 0.0049 at the 100 training archs, 0.0111 at the 200 held-out
    (the fitted noise leaves some at the training archs)."""
    x, _, x_test, _ = data
    at_train, at_new = fitted["gp"].predict(x)[1], fitted["gp"].predict(x_test)[1]
    assert at_train.mean() < 0.7 * at_new.mean()


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_misuse_is_an_error(name: str, data) -> None:  # noqa: ANN001
    x, y, _, _ = data
    predictor = PREDICTORS[name](seed=0)
    with pytest.raises(NasplatError, match="before it was fitted"):
        predictor.predict(x)
    with pytest.raises(ValueError, match="at least 2"):
        predictor.fit(x[:1], y[:1])
    with pytest.raises(ValueError, match="one target per"):
        predictor.fit(x, y[:-1])


def test_make_predictor_builds_the_configured_kind_seeded() -> None:
    assert isinstance(make_predictor(PredictorConfig(), seed=3), MLPEnsemble)
    gp = make_predictor(PredictorConfig(kind="gp"), seed=3)
    assert isinstance(gp, GaussianProcess) and gp.seed == 3 and gp.name == "gp"
    assert set(PREDICTORS) == {"mlp_ensemble", "gp"}


def test_a_constant_target_is_fitted_without_failing() -> None:
    x = encode_many(CPU_SMALL, _distinct_archs(CPU_SMALL, 10, seed=4))
    for cls in PREDICTORS.values():
        mean, std = cls(seed=0).fit(x, np.full(10, 0.5)).predict(x)
        assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)
        assert np.allclose(mean, 0.5, atol=0.05)


# --- acquisition ---------------------------------------------------------------------------------
def test_expected_improvement_is_the_closed_form() -> None:
    phi0 = 1 / math.sqrt(2 * math.pi)
    ei = expected_improvement(np.array([0.5, 0.6, 0.4, 0.7]), np.array([0.1, 0.0, 0.0, 0.2]), best=0.5)
    assert ei == pytest.approx([0.1 * phi0, 0.1, 0.0, 0.2 * 0.8413447460685429 + 0.2 * 0.24197072451914337])


def test_ei_picks_the_highest_mean_at_equal_std_and_the_higher_std_at_equal_mean() -> None:
    mean = np.array([0.50, 0.62, 0.55, 0.61])
    assert pick(mean, np.full(4, 0.02), 1, best=0.60) == [1]
    assert pick(mean, np.full(4, 0.02), 4, best=0.60) == [1, 3, 2, 0]
    assert pick(np.full(3, 0.55), np.array([0.01, 0.05, 0.03]), 3, best=0.60) == [1, 2, 0]
    # an uncertain candidate a little below the best beats a certain one a little above it
    assert pick(np.array([0.61, 0.59]), np.array([0.0, 0.05]), 1, best=0.60) == [1]
    # nothing measured yet: the mean decides; EI too small to represent: the mean, then the index
    assert pick(mean, np.array([0.0, 0.0, 0.3, 0.0]), 2) == [1, 3]
    assert pick(np.array([0.1, 0.2, 0.2]), np.full(3, 1e-4), 3, best=0.9) == [1, 2, 0]


def test_ucb_with_beta_0_is_the_mean_and_ties_go_to_the_lower_index() -> None:
    mean, std = np.array([0.3, 0.5, 0.4, 0.5]), np.array([0.2, 0.0, 0.1, 0.3])
    assert pick(mean, std, 4, kind="ucb", beta=0.0) == [1, 3, 2, 0]
    assert pick(mean, std, 2, kind="ucb", beta=1.0) == [3, 0]


def test_pick_refuses_bad_input() -> None:
    mean, std = np.array([0.3, 0.5]), np.array([0.1, 0.1])
    for bad in (lambda: pick(mean, std, 0), lambda: pick(mean, std, 3), lambda: pick(mean, -std, 1),
                lambda: pick(mean, std[:1], 1), lambda: pick(mean, std, 1, kind="pi"),  # type: ignore[arg-type]
                lambda: pick(np.array([np.nan, 0.1]), std, 1)):
        with pytest.raises(ValueError):
            bad()


def test_the_configured_acquisition_reads_from_the_config() -> None:
    config = replace(PredictorConfig(), acquisition="ucb", beta=0.0)
    mean, std = np.array([0.3, 0.5]), np.array([0.9, 0.0])
    assert pick(mean, std, 1, kind=config.acquisition, beta=config.beta) == [1]
    assert pick(mean, std, 1, best=0.5) == [0]  # ei: the uncertain one


FRONT = [(0.02, 0.30), (0.05, 0.50), (0.04, 0.20), (0.08, 0.60)]  # (cost, AP); (0.04, 0.20) is dominated


def test_ehvi_with_no_uncertainty_is_the_exact_gain_in_hypervolume() -> None:
    rng = np.random.default_rng(0)
    cost = rng.uniform(0.0, 0.11, 200)
    mean = rng.uniform(0.0, 0.8, 200)
    gain = expected_hypervolume_improvement(mean, np.zeros(200), cost, FRONT, ref_cost=0.1)
    before = hypervolume(FRONT, 0.1)
    want = [hypervolume(FRONT + [(c, m)], 0.1) - before for c, m in zip(cost, mean)]
    np.testing.assert_allclose(gain, want, atol=1e-12)
    assert np.all(gain[cost >= 0.1] == 0) and np.any(gain > 0)


def test_ehvi_is_the_mean_gain_over_the_predicted_distribution() -> None:
    rng = np.random.default_rng(1)
    before = hypervolume(FRONT, 0.1)
    for cost, mean, std in ((0.03, 0.35, 0.05), (0.06, 0.45, 0.1), (0.01, 0.1, 0.2)):
        draws = rng.normal(mean, std, 20000)
        sampled = np.mean([hypervolume(FRONT + [(cost, a)], 0.1) - before for a in draws])
        exact = expected_hypervolume_improvement(np.array([mean]), np.array([std]), np.array([cost]), FRONT, 0.1)[0]
        assert exact == pytest.approx(sampled, rel=0.03, abs=1e-6)


def test_ehvi_prefers_a_cheap_point_that_opens_the_front_over_a_dearer_one_of_equal_ap() -> None:
    mean, std = np.array([0.55, 0.55]), np.array([0.02, 0.02])
    # at 0.03 GFLOPs an AP of 0.55 beats every measured point up to 0.08; at 0.07 it beats none
    assert pick(mean, std, 2, kind="ehvi", cost=np.array([0.07, 0.03]), front=FRONT, ref_cost=0.1) == [1, 0]
    with pytest.raises(ValueError, match="needs each candidate's cost"):
        pick(mean, std, 1, kind="ehvi")


def test_screen_refits_only_when_results_grew_and_picks_deterministically() -> None:
    archs = _distinct_archs(CPU_SMALL, 40, 3)
    ap = _ap(archs)
    cost = [float(np.sum(encode_many(CPU_SMALL, [a]))) for a in archs]  # any cost: only the order matters here
    results = [(a, c, float(y)) for a, c, y in zip(archs[:30], cost[:30], ap[:30])]
    picks = []
    for _ in range(2):
        screen = Screen(CPU_SMALL, PredictorConfig(kind="mlp_ensemble", screen=10), seed=4)
        chosen, prediction = screen.choose(archs[30:], cost[30:], results, ref_cost=max(cost) + 1)
        assert prediction.fitted_on == 30 and len(prediction.screened_out) == 9
        assert chosen.key() not in {a.key() for a, _, _ in prediction.screened_out}
        picks.append((chosen.key(), prediction))
        fitted = screen.predictor._params
        screen.choose(archs[30:35], cost[30:35], results, ref_cost=max(cost) + 1)
        assert screen.predictor._params is fitted  # the same results: no refit
        screen.choose(archs[31:35], cost[31:35], results + [(archs[30], cost[30], float(ap[30]))], ref_cost=max(cost) + 1)
        assert screen.predictor._params is not fitted
    assert picks[0] == picks[1]
