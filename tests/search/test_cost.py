"""`within_budget`: the one test of GFLOPs per part against the budget on the total and the part
budgets, as the searchers, the retrain picks and the study's constraints apply it."""

from __future__ import annotations

import pytest

from nasplat.search import describe_budget, within_budget

GFLOPS = {"body": 0.05, "face": 0.02, "hand": 0.01, "total": 0.09}  # hand: one hand, counted twice in the total


@pytest.mark.parametrize("total, parts, within", [
    (None, None, True),
    (0.09, None, True),
    (0.089, None, False),
    (None, {"body": 0.05, "hand": 0.01}, True),  # a limit equal to the count holds
    (None, {"hand": 0.009}, False),
    (0.1, {"face": 0.019}, False),
    (0.08, {"body": 1.0}, False),  # the total still counts beside the parts
])
def test_within_budget_holds_every_limit_given(total, parts, within):
    assert within_budget(GFLOPS, total, parts) is within


def test_describe_budget_names_each_part():
    assert describe_budget(0.1) == "0.1 GFLOPs"
    assert describe_budget(None) == "None GFLOPs"
    assert describe_budget(0.1, {"body": 0.06, "hand": 0.03}) == "0.1 GFLOPs (body <= 0.06, hand <= 0.03)"
    assert describe_budget(None, {"face": 0.02}) == "face <= 0.02 GFLOPs"
