"""Whole-body evaluation (the official COCO-WholeBody protocol) and the part benchmarks' metrics."""

from nasplat.metrics.parts import auc_hand, epe, nme_inter_ocular, pck_hand
from nasplat.metrics.wholebody import (
    EVAL_PARTS,
    REPORT_PARTS,
    WholeBodyEvaluator,
    load_results,
    make_results,
    write_results,
)

__all__ = [
    "EVAL_PARTS", "REPORT_PARTS", "WholeBodyEvaluator", "auc_hand", "epe", "load_results",
    "make_results", "nme_inter_ocular", "pck_hand", "write_results",
]
