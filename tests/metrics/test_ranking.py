"""The ranking statistics of `nasplat validate`, against scipy where it has them and against
hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from nasplat.metrics.ranking import (
    average_ranks,
    bootstrap_interval,
    kendall_tau,
    regret,
    spearman_rho,
    spread_picks,
    top_overlap,
)


def test_hand_worked_cases():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one discordant pair of six: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))  # a constant ranking has no order
    assert average_ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman_rho([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert top_overlap([0.9, 0.8, 0.7, 0.1], [0.1, 0.8, 0.7, 0.9], k=3) == pytest.approx(2 / 3)
    assert regret([0.5, 0.7, 0.6], chosen=2) == pytest.approx(0.1)
    assert regret([0.5, 0.7, 0.6], chosen=1) == 0.0
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        spearman_rho([1, float("nan")], [1, 2])


def test_tau_and_rho_match_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(3, 15))
        x = np.round(rng.random(n), 1)  # rounded: ties on both sides
        y = np.round(x + rng.normal(0, 0.3, n), 1)
        tau, rho = kendall_tau(x, y), spearman_rho(x, y)
        want_tau, want_rho = stats.kendalltau(x, y).statistic, stats.spearmanr(x, y).statistic
        assert (np.isnan(tau) and np.isnan(want_tau)) or tau == pytest.approx(want_tau)
        assert (np.isnan(rho) and np.isnan(want_rho)) or rho == pytest.approx(want_rho)


def test_the_bootstrap_interval_holds_the_estimate_and_narrows_with_agreement():
    rng = np.random.default_rng(0)
    x = rng.random(10)
    noisy = x + rng.normal(0, 0.2, 10)
    low, high = bootstrap_interval(x, noisy, kendall_tau, resamples=1000)
    assert -1 <= low <= kendall_tau(x, noisy) <= high <= 1
    assert bootstrap_interval(x, 2 * x, kendall_tau, resamples=200) == (1.0, 1.0)  # the same order every time
    assert bootstrap_interval(x, noisy, kendall_tau, seed=3) == bootstrap_interval(x, noisy, kendall_tau, seed=3)


def test_the_picks_span_the_range_and_start_with_the_chosen_one():
    scores = [0.10, 0.12, 0.30, 0.31, 0.50, 0.52, 0.70, 0.71, 0.90, 0.20]
    picks = spread_picks(scores, 5, chosen=8)
    assert picks == [8, 0, 2, 4, 6]  # the chosen 0.90, then near 0.10, 0.30, 0.50, 0.70
    assert sorted(spread_picks(scores, 20, chosen=3)) == list(range(10))  # fewer items than asked: all
    with pytest.raises(ValueError):
        spread_picks(scores, 3, chosen=10)
