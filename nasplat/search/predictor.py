"""Accuracy predictors: which of many candidate archs deserve a real evaluation.

A real evaluation (BN recalibration and a pass over the val persons) costs seconds to a minute of
a GPU; a predictor fitted on the evaluations so far costs milliseconds per candidate. This module
holds the parts that do not depend on the search loop:

- `encode` / `encode_many`: the space's own encoding of an arch, one number in [0, 1] per
  dimension of `SearchSpace.dimensions` (group dimensions included);
- `AccuracyPredictor`: `fit(X, y)` on encoded archs and their measured whole-body AP, and
  `predict(X) -> (mean, std)`; two implementations, `MLPEnsemble` (Once-for-All's MLP on the arch
  encoding, made an ensemble for an uncertainty) and `GaussianProcess` (exact, numpy), registered
  by name in `PREDICTORS` and built from a `config.PredictorConfig` by `make_predictor`;
- `pick`: the acquisition rule, which k of n screened candidates are evaluated for real
  (`expected_hypervolume_improvement` by default);
- `Screen`: all of it as a searcher uses it (`search.predictor`; see `nasplat.search.base`).

A core module: numpy and torch (the MLP ensemble) only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Iterable, Literal, TypeVar

import numpy as np
import torch

from nasplat.config import PredictorConfig
from nasplat.errors import ConfigError, NasplatError
from nasplat.search.evaluation import Prediction
from nasplat.space import Arch, SearchSpace

Acquisition = Literal["ehvi", "ei", "ucb"]
INACTIVE = 0.0  # the code of a dimension an arch does not set


# --- encoding ------------------------------------------------------------------------------------
def _dimension_codes(space: SearchSpace) -> list[tuple[str, tuple[float, ...], tuple[float, ...]]]:
    """Per dimension of `space`: (flat name, its choices ascending, their codes in [0, 1])."""
    table = []
    for d in space.dimensions:
        values = tuple(sorted(float(c) for c in d.choices))
        step = 1.0 / (len(values) - 1) if len(values) > 1 else 0.0
        table.append((d.name, values, tuple(i * step for i in range(len(values)))))
    return table


def _code(value: float, values: tuple[float, ...], codes: tuple[float, ...]) -> float:
    # a float within 1e-6, as `SearchSpace.validate` compares RoI expansions
    for v, c in zip(values, codes):
        if abs(value - v) < 1e-6:
            return c
    raise AssertionError(f"value {value} passed validation but is not among {values}")  # not reachable


def encode_many(space: SearchSpace, archs: Iterable[Arch]) -> np.ndarray:
    """The encodings of `archs` as rows, [n, len(space.dimensions)] float64 in [0, 1].

    Column j is dimension j of `space.dimensions`: the index of the arch's value among that
    dimension's choices (ascending), divided by the number of choices less one (0 for a dimension
    with one choice). Deterministic and one-to-one on the archs of a space: two archs differ in a
    dimension exactly when their codes do.

    A group dimension (`depends_on` set) is coded within the union of its choices over every
    parent value (`Dimension.choices`), not within `choices_for(name, parent)`: so a number of
    groups has one code whatever the channels it divides, and the column means one thing across
    the space. Coded within the parent's choices, one code would name different group numbers (in
    zoomnas.yaml's halvings, 3 groups of 48 channels and 1 group of 64 are both the first choice).
    The parent's channels are a column of their own, so the pair stays one-to-one.

    A dimension the arch does not set (a block its stage's depth does not run, in a space with
    elastic depth) is coded `INACTIVE`; its stage's depth column tells it from a block at its
    first choice.

    Raises ArchError (naming the key) for an arch outside the space.
    """
    table = _dimension_codes(space)
    rows = []
    for arch in archs:
        space.validate(arch)
        flat = arch.to_flat()
        rows.append([_code(float(flat[name]), values, codes) if name in flat else INACTIVE
                     for name, values, codes in table])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(table))


def encode(space: SearchSpace, arch: Arch) -> np.ndarray:
    """The encoding of one arch, [len(space.dimensions)] float64 in [0, 1] (see `encode_many`).
    Raises ArchError for an arch outside the space."""
    return encode_many(space, [arch])[0]


# --- the predictor contract ----------------------------------------------------------------------
def _inputs(x: np.ndarray, width: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or (width is not None and a.shape[1] != width):
        want = f"[n, {width}]" if width is not None else "[n, d]"
        raise ValueError(f"encoded archs must be a {want} array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("encoded archs must be finite")
    return a


def _targets(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Checked inputs, standardised targets, and the targets' mean and scale (1 if constant)."""
    a = _inputs(x)
    t = np.asarray(y, dtype=np.float64)
    if t.shape != (len(a),):
        raise ValueError(f"one target per encoded arch is needed; got shapes {a.shape} and {t.shape}")
    if len(a) < 2:
        raise ValueError(f"fitting needs at least 2 evaluated archs, got {len(a)}")
    if not np.all(np.isfinite(t)):
        raise ValueError("targets must be finite")
    mean, scale = float(t.mean()), float(t.std())
    scale = scale if scale > 0 else 1.0
    return a, (t - mean) / scale, mean, scale


class AccuracyPredictor(ABC):
    """Predicts an arch's whole-body AP from its encoding (`encode_many`), with an uncertainty.

    Contract (every implementation, tested in `tests/search/test_predictor.py`):
    - `fit(X, y)` learns from X [n, d] encoded archs (n >= 2) and y [n] their measured AP,
      replacing whatever an earlier fit learnt; it returns the predictor.
    - `predict(X)` -> (mean [m], std [m]): the predicted AP and its standard deviation (>= 0, in
      AP units), an estimate of how uncertain the mean is, larger away from the archs fitted on.
    - The same seed and the same data give the same predictions, bit for bit.
    - Bad shapes or values raise ValueError; `predict` before `fit` raises NasplatError.
    """

    name: ClassVar[str] = "base"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._width: int | None = None

    @property
    def fitted(self) -> bool:
        return self._width is not None

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray) -> AccuracyPredictor:
        """Fit on encoded archs `x` [n, d] and their AP `y` [n]; returns self."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean [m], std [m]) of the AP of the encoded archs `x` [m, d]."""

    def _check_predict(self, x: np.ndarray) -> np.ndarray:
        if self._width is None:
            raise NasplatError(f"the {self.name} predictor was asked to predict before it was fitted")
        return _inputs(x, self._width)


P = TypeVar("P", bound=type[AccuracyPredictor])
PREDICTORS: dict[str, type[AccuracyPredictor]] = {}


def register_predictor(name: str) -> Callable[[P], P]:
    """Class decorator adding a predictor to `PREDICTORS` under `name` (a `search.predictor.kind`)."""

    def deco(cls: P) -> P:
        cls.name = name
        PREDICTORS[name] = cls
        return cls

    return deco


def make_predictor(config: PredictorConfig, seed: int) -> AccuracyPredictor:
    """The predictor `config.kind` with its default settings, seeded. Raises ConfigError for a
    kind that is not registered."""
    cls = PREDICTORS.get(config.kind)
    if cls is None:
        raise ConfigError(f"unknown predictor {config.kind!r}; allowed: {', '.join(sorted(PREDICTORS))}",
                          key="search.predictor.kind")
    return cls(seed=seed)


# --- an ensemble of small MLPs -------------------------------------------------------------------
class _one_thread:
    """Torch on one thread inside the block: the fit does not compete with the evaluators for
    cores, and its float sums always run in the same order (bit-identical predictions)."""

    def __enter__(self) -> None:
        self._old = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._old)


@register_predictor("mlp_ensemble")
class MLPEnsemble(AccuracyPredictor):
    """K small MLPs on the arch encoding (Once-for-All's accuracy predictor, K times), trained at
    once as one batched network.

    Each member sees its own bootstrap resample of the data (as weights: how often each point was
    drawn) and starts from its own random weights; the mean of the members is the prediction and
    their spread (standard deviation) the uncertainty, which grows where the resamples disagree:
    away from the data. Targets are standardised; training is full-batch Adam with weight decay
    for a fixed number of epochs (no early stopping, so time is bounded: under 2 s for 1,000
    points on one busy core with the defaults), on one torch thread.

    members: K (>= 2). hidden: units per hidden layer. layers: hidden layers (>= 1).
    epochs, lr, weight_decay: the optimiser's. bootstrap: False trains every member on all points
    (members then differ by their initial weights only).
    """

    def __init__(self, seed: int = 0, members: int = 5, hidden: int = 64, layers: int = 2, epochs: int = 300,
                 lr: float = 1e-2, weight_decay: float = 1e-2, bootstrap: bool = True) -> None:
        if members < 2 or hidden < 1 or layers < 1 or epochs < 1 or lr <= 0 or weight_decay < 0:
            raise ValueError(f"bad MLP ensemble settings: members={members} (>= 2), hidden={hidden} (>= 1), "
                             f"layers={layers} (>= 1), epochs={epochs} (>= 1), lr={lr} (> 0), "
                             f"weight_decay={weight_decay} (>= 0)")
        super().__init__(seed)
        self.members, self.hidden, self.layers = members, hidden, layers
        self.epochs, self.lr, self.weight_decay, self.bootstrap = epochs, lr, weight_decay, bootstrap
        self._params: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._y_mean, self._y_scale = 0.0, 1.0

    def _init(self, width: int, gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (weight [K, in, out], bias [K, 1, out]), uniform in +-1/sqrt(in) as
        `nn.Linear` starts, drawn from `gen`."""
        sizes = [width] + [self.hidden] * self.layers + [1]
        params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.empty(self.members, fan_in, fan_out).uniform_(-bound, bound, generator=gen)
            b = torch.empty(self.members, 1, fan_out).uniform_(-bound, bound, generator=gen)
            params.append((w.requires_grad_(), b.requires_grad_()))
        return params

    @staticmethod
    def _forward(params: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        """x [n, d] -> each member's output [K, n]."""
        h = x.unsqueeze(0).expand(params[0][0].shape[0], -1, -1)  # [K, n, d]
        for i, (w, b) in enumerate(params):
            h = torch.baddbmm(b, h, w)  # [K, n, out]
            if i < len(params) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)  # [K, n]

    def fit(self, x: np.ndarray, y: np.ndarray) -> MLPEnsemble:
        a, z, self._y_mean, self._y_scale = _targets(x, y)
        n = len(a)
        rng = np.random.default_rng(self.seed)
        if self.bootstrap:  # [K, n]: how often each point is in member k's resample
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=self.members)
        else:
            counts = np.ones((self.members, n))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        inputs = torch.as_tensor(2.0 * a - 1.0, dtype=torch.float32)  # [n, d], centred on 0
        target = torch.as_tensor(z, dtype=torch.float32).unsqueeze(0)  # [1, n]
        weight = torch.as_tensor(counts / n, dtype=torch.float32)  # [K, n]
        with _one_thread():
            params = self._init(a.shape[1], gen)
            flat = [t for pair in params for t in pair]
            opt = torch.optim.Adam(flat, lr=self.lr, weight_decay=self.weight_decay)
            for _ in range(self.epochs):
                opt.zero_grad(set_to_none=True)
                # the members' losses summed: each member's gradient is its own loss's
                loss = (weight * (self._forward(params, inputs) - target) ** 2).sum()
                loss.backward()
                opt.step()
        self._params = [(w.detach(), b.detach()) for w, b in params]
        self._width = a.shape[1]
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self._check_predict(x)
        with _one_thread(), torch.no_grad():
            out = self._forward(self._params, torch.as_tensor(2.0 * a - 1.0, dtype=torch.float32))  # [K, m]
        z = out.double().numpy()
        return self._y_mean + self._y_scale * z.mean(axis=0), self._y_scale * z.std(axis=0)


# --- a Gaussian process --------------------------------------------------------------------------
def _matern52(r: np.ndarray) -> np.ndarray:
    """Matern 5/2 correlation at distance r (in length scales)."""
    s = math.sqrt(5.0) * r
    return (1.0 + s + s * s / 3.0) * np.exp(-s)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)]."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


@register_predictor("gp")
class GaussianProcess(AccuracyPredictor):
    """Exact Gaussian-process regression on the arch encoding (numpy only).

    Kernel: signal variance x Matern 5/2 of the Euclidean distance between encodings over one
    length scale, plus a noise variance; a constant mean (targets are standardised). Matern 5/2
    rather than RBF: the AP of neighbouring archs changes by steps, not as smoothly as an RBF
    assumes (the usual choice for Bayesian optimisation over hyperparameters).

    The hyperparameters maximise the log marginal likelihood: for each length scale of a grid
    (`length_scales`, in units of sqrt(d), the largest distance in the encoding's cube) the
    correlation matrix is diagonalised once, which gives the likelihood for every noise-to-signal
    ratio of `noise_ratios` at once; the signal variance has its closed-form optimum. The grid is
    then refined around the best length scale. The final fit is a Cholesky factorisation with
    jitter added (and raised tenfold, a few times) when the matrix is not numerically positive
    definite. Deterministic: no randomness at all (`seed` is unused). Time grows as n^3: 0.02 s
    for 100 points, about 3 s for 1,000 on one busy core.

    `predict`'s std is that of the latent AP (the noise of a measurement excluded), so it is small
    at the archs fitted on and grows towards the signal's standard deviation away from them.
    """

    def __init__(self, seed: int = 0, length_scales: tuple[float, ...] = tuple(np.geomspace(0.03, 3.0, 13)),
                 noise_ratios: tuple[float, ...] = tuple(np.geomspace(1e-6, 1.0, 25)), refine: int = 6) -> None:
        if not length_scales or min(length_scales) <= 0 or not noise_ratios or min(noise_ratios) <= 0 or refine < 0:
            raise ValueError("length scales and noise ratios must be non-empty and positive, refine >= 0")
        super().__init__(seed)
        self.length_scales = tuple(float(v) for v in length_scales)
        self.noise_ratios = tuple(float(v) for v in noise_ratios)
        self.refine = refine
        self.length_scale = self.signal_var = self.noise_var = float("nan")  # fitted, standardised AP units
        self._x = np.empty((0, 0))
        self._chol = np.empty((0, 0))
        self._alpha = np.empty(0)
        self._y_mean, self._y_scale = 0.0, 1.0

    def _profile(self, dist: np.ndarray, z: np.ndarray, scale: float) -> tuple[float, float, float]:
        """(log marginal likelihood, noise ratio, signal variance), the best over `noise_ratios`
        at length scale `scale`, the signal variance at its optimum."""
        n = len(z)
        eigvals, eigvecs = np.linalg.eigh(_matern52(dist / scale))
        eigvals = np.maximum(eigvals, 0.0)
        proj = (eigvecs.T @ z) ** 2  # [n]
        best = (-math.inf, self.noise_ratios[0], 1.0)
        for ratio in self.noise_ratios:
            shifted = eigvals + ratio
            signal = max(float(np.sum(proj / shifted)) / n, 1e-12)  # argmax of the likelihood
            # log N(z; 0, signal (R + ratio I)) at that signal variance
            lml = -0.5 * (n * math.log(signal) + float(np.sum(np.log(shifted))) + n * (1.0 + math.log(2 * math.pi)))
            if lml > best[0]:
                best = (lml, ratio, signal)
        return best

    def fit(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        a, z, self._y_mean, self._y_scale = _targets(x, y)
        unit = math.sqrt(max(a.shape[1], 1))
        dist = _distances(a, a)
        grid = sorted(self.length_scales)
        scores = [self._profile(dist, z, s * unit) for s in grid]
        i = max(range(len(grid)), key=lambda j: scores[j][0])
        if self.refine and len(grid) > 1:  # between the best's neighbours, on a log scale
            lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
            finer = [float(v) for v in np.geomspace(lo, hi, self.refine + 2)[1:-1]]
            grid += finer
            scores += [self._profile(dist, z, s * unit) for s in finer]
            i = max(range(len(grid)), key=lambda j: (scores[j][0], -j))
        _, ratio, signal = scores[i]
        self.length_scale = grid[i] * unit
        self.signal_var, self.noise_var = signal, signal * ratio
        corr = _matern52(dist / self.length_scale) + ratio * np.eye(len(a))
        self._chol = _cholesky(corr)
        self._alpha = np.linalg.solve(self._chol.T, np.linalg.solve(self._chol, z))  # (R + ratio I)^-1 z
        self._x = a
        self._width = a.shape[1]
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self._check_predict(x)
        cross = _matern52(_distances(a, self._x) / self.length_scale)  # [m, n]
        mean = cross @ self._alpha
        v = np.linalg.solve(self._chol, cross.T)  # [n, m]
        var = self.signal_var * np.maximum(1.0 - (v * v).sum(axis=0), 0.0)
        return self._y_mean + self._y_scale * mean, self._y_scale * np.sqrt(var)


def _cholesky(matrix: np.ndarray, jitter: float = 1e-10, attempts: int = 6) -> np.ndarray:
    """Lower Cholesky factor of `matrix` + jitter I, the jitter raised tenfold while the matrix is
    not numerically positive definite. Raises NasplatError after `attempts`."""
    eye = np.eye(len(matrix))
    for k in range(attempts):
        try:
            return np.linalg.cholesky(matrix + jitter * 10**k * eye)
        except np.linalg.LinAlgError:
            continue
    raise NasplatError(f"the Gaussian process's kernel matrix is not positive definite even with jitter "
                       f"{jitter * 10 ** (attempts - 1):g}")


# --- acquisition ---------------------------------------------------------------------------------
def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in z.ravel()]).reshape(z.shape)


def _scores_input(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if mu.ndim != 1 or mu.shape != sigma.shape:
        raise ValueError(f"mean and std must be equally long lists, got shapes {mu.shape} and {sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))) or np.any(sigma < 0):
        raise ValueError("mean must be finite and std finite and >= 0")
    return mu, sigma


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float | None) -> np.ndarray:
    """E[max(AP - best, 0)] for AP ~ Normal(mean, std): (mean - best) Phi(z) + std phi(z), z =
    (mean - best) / std; max(mean - best, 0) where std is 0. `best` None (nothing measured yet)
    gives `mean`, the order EI tends to as best goes to minus infinity. Raises ValueError for bad
    inputs or a best that is not finite."""
    mu, sigma = _scores_input(mean, std)
    if best is None:
        return mu.copy()
    if not math.isfinite(best):
        raise ValueError(f"best must be a finite AP or None, got {best}")
    gain = mu - best
    out = np.maximum(gain, 0.0)
    pos = sigma > 0
    z = gain[pos] / sigma[pos]
    out[pos] = gain[pos] * _normal_cdf(z) + sigma[pos] * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return np.maximum(out, 0.0)


def upper_confidence_bound(mean: np.ndarray, std: np.ndarray, beta: float) -> np.ndarray:
    """mean + beta * std (beta >= 0; 0: the mean alone)."""
    mu, sigma = _scores_input(mean, std)
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return mu + beta * sigma


def expected_hypervolume_improvement(mean: np.ndarray, std: np.ndarray, cost: np.ndarray,
                                     front: list[tuple[float, float]], ref_cost: float,
                                     ref_ap: float = 0.0) -> np.ndarray:
    """The expected gain in hypervolume of (AP up, cost down) under (`ref_cost`, `ref_ap`) if each
    candidate were added to the measured points `front` ((cost, AP) pairs; dominated ones may be
    among them): candidate i has exactly known cost `cost[i]` (analytic GFLOPs or predicted
    latency) and AP ~ Normal(mean[i], std[i]).

    With b(x) the best measured AP at cost <= x (`ref_ap` where none), a point (c, a) adds the
    area of {c <= x <= ref_cost, b(x) < y <= a}: the integral over x from c to ref_cost of
    max(a - b(x), 0). b is a step function, so the expectation is exact: the sum over its steps
    of step width x `expected_improvement(mean, std, b)`. A candidate at or beyond `ref_cost` gains
    nothing. Raises ValueError for bad inputs."""
    mu, sigma = _scores_input(mean, std)
    c = np.asarray(cost, dtype=np.float64)
    if c.shape != mu.shape or not np.all(np.isfinite(c)):
        raise ValueError(f"one finite cost per candidate is needed, got shape {c.shape} for {len(mu)} candidates")
    if not (math.isfinite(ref_cost) and math.isfinite(ref_ap)):
        raise ValueError("the reference point must be finite")
    points = sorted((float(g), float(a)) for g, a in front if g < ref_cost)
    out = np.zeros(len(mu))
    for i in range(len(mu)):
        if c[i] >= ref_cost:
            continue
        best = max([ref_ap] + [a for g, a in points if g <= c[i]])
        edges, levels = [float(c[i])], [best]
        for g, a in points:
            if g > c[i] and a > levels[-1]:
                edges.append(g)
                levels.append(a)
        edges.append(ref_cost)
        for j, level in enumerate(levels):
            width = edges[j + 1] - edges[j]
            if width > 0:
                out[i] += width * float(expected_improvement(mu[i:i + 1], sigma[i:i + 1], level)[0])
    return out


def pick(mean: np.ndarray, std: np.ndarray, k: int, *, best: float | None = None, kind: Acquisition = "ei",
         beta: float = 1.0, cost: np.ndarray | None = None, front: list[tuple[float, float]] | None = None,
         ref_cost: float | None = None) -> list[int]:
    """Which `k` of n screened candidates to evaluate for real: their indices, best first.

    The candidates are given by their predicted whole-body AP (`mean` [n]) and its uncertainty
    (`std` [n]); all are within the budget already (the searcher proposes only feasible archs).

    kind "ehvi" (the searchers' default, `search.predictor.acquisition`): the expected improvement
    of the hypervolume of (AP, cost) under the budget (`expected_hypervolume_improvement`; needs
    `cost` [n], the measured `front` and `ref_cost`, the budget). The search is judged by its front
    under the budget (its best AP is that front's top end, and a smaller budget picks a cheaper
    point of it), so the gain of the whole front is what a real evaluation can buy: a candidate is
    worth evaluating where it may beat every measured arch at its cost or below, weighted by how
    far it may beat them, over how much of the cost axis. Exploration comes through std, with no
    weight to tune, and it is exact in two objectives (one of them known without evaluation).

    kind "ei": the expected improvement of AP over `best`, the best AP measured so far under the
    budget (None: nothing measured yet; the mean decides): the front's top end alone.

    Under "ehvi" and "ei", candidates with equal scores (including those too far below the
    measured points for the improvement to be represented, about 37 std) go to the higher mean,
    then the lower index.

    kind "ucb": mean + `beta` * std, the alternative with an explicit exploration weight (`beta` 0:
    the predicted AP alone); ties go to the lower index.

    The top k by score are returned (no penalty for picking similar candidates together: the
    searchers evaluate one pick per `search.predictor.screen` candidates). Raises ValueError for
    bad inputs, k outside 1..n, an unknown kind or "ehvi" without cost, front and ref_cost.
    """
    mu, sigma = _scores_input(mean, std)
    if not 1 <= k <= len(mu):
        raise ValueError(f"k must be between 1 and the number of candidates ({len(mu)}), got {k}")
    index = np.arange(len(mu))
    if kind == "ehvi":
        if cost is None or front is None or ref_cost is None:
            raise ValueError("the ehvi acquisition needs each candidate's cost, the measured front and the reference cost")
        order = np.lexsort((index, -mu, -expected_hypervolume_improvement(mu, sigma, cost, front, ref_cost)))
    elif kind == "ei":
        order = np.lexsort((index, -mu, -expected_improvement(mu, sigma, best)))
    elif kind == "ucb":
        order = np.lexsort((index, -upper_confidence_bound(mu, sigma, beta)))
    else:
        raise ValueError(f"unknown acquisition {kind!r}; allowed: ehvi, ei, ucb")
    return [int(i) for i in order[:k]]


# --- the predictor in a searcher -----------------------------------------------------------------
class Screen:
    """The accuracy predictor as a searcher uses it (`Searcher(..., predictor=...)`): fitted on the
    searcher's successful results, it picks one of the candidates proposed for a real evaluation.

    Nothing here is kept that the study store does not hold: the fit depends only on the results
    told (in telling order) and the seed, and is redone whenever that list has grown. A searcher
    rebuilt by replaying a stored study therefore refits at the same points on the same data and
    picks the same candidates.
    """

    def __init__(self, space: SearchSpace, config: PredictorConfig, seed: int) -> None:
        self.space, self.config = space, config
        self.predictor = make_predictor(config, seed)
        self._fitted_on = 0

    def ready(self, n_results: int) -> bool:
        """Whether enough archs were evaluated (`warmup`) for the predictor to screen."""
        return n_results >= self.config.warmup

    def choose(self, candidates: list[Arch], cost: list[float], results: list[tuple[Arch, float, float]],
               ref_cost: float) -> tuple[Arch, Prediction]:
        """The candidate to evaluate, and the `Prediction` recorded with it (the other candidates
        are its `screened_out`).

        candidates: feasible, new archs (at least one). cost: each one's cost (the searcher's cost
        objective). results: every successful evaluation so far as (arch, cost, measured AP), in
        telling order (at least 2). ref_cost: the cost budget (or the space's largest cost)."""
        if len(results) != self._fitted_on:
            x = encode_many(self.space, [a for a, _, _ in results])
            self.predictor.fit(x, np.array([ap for _, _, ap in results]))
            self._fitted_on = len(results)
        mean, std = self.predictor.predict(encode_many(self.space, candidates))
        c = self.config
        i = pick(mean, std, 1, best=max(ap for _, _, ap in results), kind=c.acquisition, beta=c.beta,
                 cost=np.asarray(cost, dtype=np.float64), front=[(g, ap) for _, g, ap in results], ref_cost=ref_cost)[0]
        others = tuple((a, float(mean[j]), float(std[j])) for j, a in enumerate(candidates) if j != i)
        return candidates[i], Prediction(float(mean[i]), float(std[i]), self._fitted_on, others)


__all__ = [
    "PREDICTORS",
    "AccuracyPredictor",
    "Screen",
    "GaussianProcess",
    "MLPEnsemble",
    "encode",
    "encode_many",
    "expected_hypervolume_improvement",
    "expected_improvement",
    "make_predictor",
    "pick",
    "register_predictor",
    "upper_confidence_bound",
]
