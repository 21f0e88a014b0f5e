"""Does one ranking of subnets agree with another? The statistics of `nasplat validate`.

One-shot NAS rests on the supernet ranking subnets (by their AP with inherited weights) the way
training each alone would. Given the two scores of the same K subnets:

- `kendall_tau` (tau-b: ties in either ranking are accounted for) and `spearman_rho` (Pearson's
  correlation of the average ranks);
- `bootstrap_interval`: a percentile interval of either, resampling the K pairs with replacement
  (a resample in which one side is all ties has no correlation and is skipped);
- `top_overlap`: how many of the top k by one score are among the top k by the other, over k;
- `regret`: how much stand-alone AP the search's choice gives up against the best of the K;
- `spread_picks`: which K subnets to train, spanning the range of inherited AP;
- `rank_agreement`: tau and rho with their intervals, as one record;
- `trailing_agreement`: how well a predictor's predictions agreed with the measurements that
  followed them, over a trailing window (the search's accuracy predictor).

A core module: numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"two equally long lists of scores are needed; got shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("scores must be finite")
    return a, b


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two scorings of the same items; nan when either is constant (or fewer
    than 2 items)."""
    a, b = _pair(x, y)
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    pairs_a, pairs_b = np.count_nonzero(da), np.count_nonzero(db)  # pairs not tied in a, in b
    if pairs_a == 0 or pairs_b == 0:
        return float("nan")
    return float(np.sum(da * db) / np.sqrt(pairs_a * pairs_b))


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of `x`, tied values sharing the mean of their ranks."""
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    for value in np.unique(a):
        tied = a == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (the correlation of the average ranks); nan when either is constant."""
    a, b = _pair(x, y)
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    return float(np.sum(ra * rb) / denominator) if denominator > 0 else float("nan")


def bootstrap_interval(x: Sequence[float], y: Sequence[float], statistic: Callable[[np.ndarray, np.ndarray], float],
                       *, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval (`level`) of `statistic(x, y)` over `resamples` draws of
    the pairs with replacement, seeded; resamples where it is nan (one side all ties) are left
    out. (nan, nan) when none is left."""
    a, b = _pair(x, y)
    if not 0 < level < 1:
        raise ValueError(f"level {level} is not between 0 and 1")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(a), len(a))
        value = statistic(a[pick], b[pick])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def top_overlap(x: Sequence[float], y: Sequence[float], k: int = 3) -> float:
    """The share of the top `k` items by `x` that are also in the top `k` by `y` (ties broken by
    position, the same way on both sides)."""
    a, b = _pair(x, y)
    k = min(k, len(a))
    if k < 1:
        raise ValueError("k must be at least 1")
    top_a = set(np.argsort(-a, kind="mergesort")[:k].tolist())
    top_b = set(np.argsort(-b, kind="mergesort")[:k].tolist())
    return len(top_a & top_b) / k


def regret(standalone: Sequence[float], chosen: int) -> float:
    """The best stand-alone score among the items minus that of item `chosen` (0: the search chose
    the best of them)."""
    values = np.asarray(standalone, dtype=float)
    if not 0 <= chosen < len(values):
        raise ValueError(f"chosen index {chosen} is outside the {len(values)} items")
    return float(values.max() - values[chosen])


def spread_picks(scores: Sequence[float], k: int, chosen: int) -> list[int]:
    """Indices of `k` items to train alone: `chosen` first, then, of k evenly spaced points over the
    range of `scores` (lowest to highest) less the one nearest the chosen item's score, the item
    nearest each point, each item once; when fewer than `k` items exist, all of them.
    Deterministic."""
    values = np.asarray(scores, dtype=float)
    if not 0 <= chosen < len(values):
        raise ValueError(f"chosen index {chosen} is outside the {len(values)} items")
    if k < 1:
        raise ValueError("k must be at least 1")
    picks = [chosen]
    if k >= len(values):
        return picks + [i for i in range(len(values)) if i != chosen]
    targets = list(np.linspace(values.min(), values.max(), k))
    targets.pop(int(np.argmin([abs(t - values[chosen]) for t in targets])))  # the chosen one stands there
    for target in targets:
        free = [i for i in range(len(values)) if i not in picks]
        picks.append(min(free, key=lambda i: (abs(values[i] - target), i)))
    return picks


def rank_agreement(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> dict[str, float | list[float]]:
    """Kendall's tau and Spearman's rho of two scorings with their bootstrap intervals:
    {"kendall_tau", "kendall_tau_ci": [low, high], "spearman_rho", "spearman_rho_ci": [low, high]}
    (nan where undefined: see `kendall_tau`, `bootstrap_interval`)."""
    out: dict[str, float | list[float]] = {}
    for name, statistic in (("kendall_tau", kendall_tau), ("spearman_rho", spearman_rho)):
        out[name] = statistic(x, y)
        out[f"{name}_ci"] = list(bootstrap_interval(x, y, statistic, resamples=resamples, level=level, seed=seed))
    return out


def trailing_agreement(predicted: Sequence[float], measured: Sequence[float], window: int = 20) -> list[dict[str, float]]:
    """For each prefix of the (predicted, measured) pairs, in the order they were measured: the
    agreement over its last `window` pairs, {"n": pairs so far, "kendall_tau", "rmse"} (tau nan
    while fewer than 3 pairs are in the window or either side is constant there). Raises
    ValueError for unequal lengths, non-finite values or a window below 3."""
    p, m = _pair(predicted, measured)
    if window < 3:
        raise ValueError(f"the window must hold at least 3 pairs, got {window}")
    out = []
    for n in range(1, len(p) + 1):
        a, b = p[max(0, n - window):n], m[max(0, n - window):n]
        tau = kendall_tau(a, b) if len(a) >= 3 else float("nan")
        out.append({"n": float(n), "kendall_tau": tau, "rmse": float(np.sqrt(np.mean((a - b) ** 2)))})
    return out


__all__ = ["average_ranks", "bootstrap_interval", "kendall_tau", "rank_agreement", "regret", "spearman_rho",
           "spread_picks", "top_overlap", "trailing_agreement"]
