from __future__ import annotations

from nasplat.search.base import Searcher, register_searcher
from nasplat.search.evaluation import Evaluation
from nasplat.space import Arch


@register_searcher("random")
class RandomSearcher(Searcher):
    """Uniform random sampling (`space.sample`) with rejection of over-budget archs; with a
    predictor, the predictor's pick among `screen` uniform samples."""

    def _propose(self) -> Arch:
        return self.space.sample(self.rng)

    def _observe(self, arch: Arch, evaluation: Evaluation | None) -> None:
        return None
