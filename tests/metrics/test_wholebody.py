"""WholeBodyEvaluator: agreement with the official xtcocotools evaluation, results format, bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nasplat.data.keypoints import PART_FIELDS, PART_SLICES, PARTS, SIGMAS
from nasplat.errors import DataError
from nasplat.metrics import WholeBodyEvaluator, make_results, write_results

_XT_TYPES = {
    "body": "keypoints_body", "foot": "keypoints_foot", "face": "keypoints_face",
    "lefthand": "keypoints_lefthand", "righthand": "keypoints_righthand", "wholebody": "keypoints_wholebody",
}


def _perturbed_results(gt_file: Path, seed: int) -> list[dict]:
    """Noisy copies of most GT people (noise varying per person and part), duplicates, misses,
    false positives, and some results with a whole part at score 0."""
    rng = np.random.default_rng(seed)
    data = json.loads(gt_file.read_text())
    results = []
    for ann in data["annotations"]:
        if ann["iscrowd"] or rng.random() < 0.1:
            continue
        k = np.concatenate([np.asarray(ann[PART_FIELDS[p]], dtype=float) for p in PARTS]).reshape(133, 3)
        x, y, w, h = ann["bbox"]
        unlabeled = k[:, 2] <= 0
        k[unlabeled, 0] = x + w / 2
        k[unlabeled, 1] = y + h / 2
        scale = math.sqrt(max(ann["area"], 1.0))
        for p in PARTS:
            sl = PART_SLICES[p]
            noise = scale * float(rng.uniform(0.0, 0.08 if p in ("body", "foot") else 0.03))
            k[sl, :2] += rng.normal(0, noise, size=(sl.stop - sl.start, 2))
        k[:, 2] = rng.uniform(0.05, 1.0, size=133)
        if rng.random() < 0.15:
            part = PARTS[int(rng.integers(1, 5))]
            k[PART_SLICES[part], 2] = 0.0  # "not predicted": must be dropped for that part
        for copy_i in range(2 if rng.random() < 0.15 else 1):
            jitter = rng.normal(0, 3.0 * copy_i, size=(133, 2))
            kk = k.copy()
            kk[:, :2] += jitter
            res = {"image_id": ann["image_id"], "category_id": 1, "score": float(rng.uniform(0.1, 1.0))}
            for p in PARTS:
                res[PART_FIELDS[p]] = [float(v) for v in kk[PART_SLICES[p]].reshape(-1)]
            results.append(res)
    for img in data["images"][::3]:  # false positives
        kk = np.column_stack([rng.uniform(0, img["width"], 133), rng.uniform(0, img["height"], 133), rng.uniform(0.1, 1, 133)])
        res = {"image_id": img["id"], "category_id": 1, "score": float(rng.uniform(0.0, 0.5))}
        for p in PARTS:
            res[PART_FIELDS[p]] = [float(v) for v in kk[PART_SLICES[p]].reshape(-1)]
        results.append(res)
    return results


def _reference(xtcocotools_eval, gt_file: Path, results: list[dict]) -> dict[str, dict[str, float]]:
    COCO, COCOeval = xtcocotools_eval
    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        for part, iou_type in _XT_TYPES.items():
            dt = gt.loadRes(copy.deepcopy(results))
            sigmas = SIGMAS if part == "wholebody" else SIGMAS[PART_SLICES[part]]
            ev = COCOeval(gt, dt, iou_type, np.array(sigmas), use_area=True)
            ev.params.useSegm = None
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out[part] = {"AP": float(ev.stats[0]), "AR": float(ev.stats[5])}
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_official_xtcocotools_evaluation(synth_val: Path, xtcocotools_eval, seed: int) -> None:
    results = _perturbed_results(synth_val, seed)
    ours = WholeBodyEvaluator(synth_val).evaluate_parts(results)
    ref = _reference(xtcocotools_eval, synth_val, results)
    for part in ref:
        for metric in ("AP", "AR"):
            assert ours[part][metric] == pytest.approx(ref[part][metric], abs=5e-4), (part, metric)
    # the case is not trivial: parts are neither perfect nor zero
    aps = [ours[p]["AP"] for p in ref]
    assert min(aps) < 0.9 and max(aps) > 0.2


def test_evaluate_reports_hand_as_mean_of_left_and_right(synth_val: Path) -> None:
    results = _perturbed_results(synth_val, 2)
    ev = WholeBodyEvaluator(synth_val)
    parts = ev.evaluate_parts(results)
    report = ev.evaluate(results)
    assert set(report) == {"body", "foot", "face", "hand", "wholebody"}
    assert report["hand"]["AP"] == pytest.approx((parts["lefthand"]["AP"] + parts["righthand"]["AP"]) / 2)
    assert report["hand"]["AR"] == pytest.approx((parts["lefthand"]["AR"] + parts["righthand"]["AR"]) / 2)
    for part in report.values():
        assert 0.0 <= part["AP"] <= 1.0 and 0.0 <= part["AR"] <= 1.0


def test_perfect_predictions_score_one(synth_val: Path, tmp_path: Path) -> None:
    data = json.loads(synth_val.read_text())
    anns = [a for a in data["annotations"] if not a["iscrowd"]]
    kps = np.stack([
        np.concatenate([np.asarray(a[PART_FIELDS[p]], float) for p in PARTS]).reshape(133, 3) for a in anns
    ])
    for kp, a in zip(kps, anns):  # an unlabeled part predicted inside the person box is ignored
        x, y, w, h = a["bbox"]
        kp[kp[:, 2] <= 0, :2] = (x + w / 2, y + h / 2)
    kps[..., 2] = 0.9
    results = make_results([a["image_id"] for a in anns], kps, np.ones(len(anns)))
    path = tmp_path / "res.json"
    write_results(path, results)
    report = WholeBodyEvaluator(synth_val).evaluate(path)
    for part, m in report.items():
        assert m["AP"] == pytest.approx(1.0), part
        assert m["AR"] == pytest.approx(1.0), part


def test_image_ids_scores_a_subset_as_if_the_gt_held_only_those_images(synth_val: Path, tmp_path: Path) -> None:
    data = json.loads(synth_val.read_text())
    subset = sorted(img["id"] for img in data["images"])[:9]
    results = [r for r in _perturbed_results(synth_val, seed=5) if r["image_id"] in subset]
    small = dict(data, images=[i for i in data["images"] if i["id"] in subset],
                 annotations=[a for a in data["annotations"] if a["image_id"] in subset])
    small_file = tmp_path / "small.json"
    small_file.write_text(json.dumps(small))
    expected = WholeBodyEvaluator(small_file).evaluate(results)
    full = WholeBodyEvaluator(synth_val)
    assert full.evaluate(results, image_ids=subset) == expected
    # without the subset the other images' people count as misses
    assert full.evaluate(results)["wholebody"]["AR"] < expected["wholebody"]["AR"]
    with pytest.raises(DataError, match="image_ids"):
        full.evaluate(results, image_ids=[10**9])


def test_make_results_never_writes_zero_scores() -> None:
    kps = np.zeros((2, 133, 3))
    kps[1, :, 2] = -0.5
    res = make_results([1, 2], kps, [0.5, 0.7])
    assert set(res[0]) == {"image_id", "category_id", "score", *PART_FIELDS.values()}
    for r in res:
        for field in PART_FIELDS.values():
            assert min(r[field][2::3]) > 0
    assert len(res[0]["face_kpts"]) == 204 and len(res[0]["keypoints"]) == 51


def _one_result(synth_val: Path) -> dict:
    data = json.loads(synth_val.read_text())
    return make_results([data["images"][0]["id"]], np.ones((1, 133, 3)), [0.5])[0]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r.update(face_kpts=r["face_kpts"][:-3]), "face_kpts"),
        (lambda r: r.update(image_id=987654321), "image_id"),
        (lambda r: r["lefthand_kpts"].__setitem__(4, float("nan")), "lefthand_kpts"),
        (lambda r: r.update(score=None), "score"),
        (lambda r: r.pop("foot_kpts"), "foot_kpts"),
    ],
)
def test_bad_results_raise_data_error_naming_the_field(synth_val: Path, mutate, needle: str) -> None:
    res = _one_result(synth_val)
    mutate(res)
    with pytest.raises(DataError) as info:
        WholeBodyEvaluator(synth_val).evaluate([res])
    assert needle in str(info.value) and "[0]" in str(info.value)


def test_make_results_rejects_nan() -> None:
    kps = np.ones((1, 133, 3))
    kps[0, 3, 0] = np.nan
    with pytest.raises(DataError):
        make_results([1], kps, [1.0])
