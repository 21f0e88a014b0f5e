"""Facts about the 133 COCO-WholeBody keypoints: names, OKS sigmas, flip pairs, part slices.

Order is the released concatenation `keypoints + foot_kpts + face_kpts + lefthand_kpts +
righthand_kpts` (body 0:17, foot 17:23, face 23:91, left hand 91:112, right hand 112:133).
Sigmas are the official ones of `myeval_wholebody.py` (see docs/wholebody_facts.md section 2).
"""

from __future__ import annotations

import numpy as np

NUM_KEYPOINTS = 133
NUM_BODY_CHANNELS = 38  # 23 body/foot keypoints + 5 box keypoints x (face, left hand, right hand)
NUM_BODY_KEYPOINTS = 23  # body + foot

BODY_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
FOOT_NAMES: tuple[str, ...] = (
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)
FACE_NAMES: tuple[str, ...] = tuple(f"face-{k}" for k in range(68))
_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
_HAND_SUFFIXES: tuple[str, ...] = ("hand_root",) + tuple(f"{f}{j}" for f in _FINGERS for j in range(1, 5))
LEFTHAND_NAMES: tuple[str, ...] = tuple(f"left_{s}" for s in _HAND_SUFFIXES)
RIGHTHAND_NAMES: tuple[str, ...] = tuple(f"right_{s}" for s in _HAND_SUFFIXES)
NAMES: tuple[str, ...] = BODY_NAMES + FOOT_NAMES + FACE_NAMES + LEFTHAND_NAMES + RIGHTHAND_NAMES

# Part name -> slice of the 133-point order, and the JSON field each part lives in.
PARTS: tuple[str, ...] = ("body", "foot", "face", "lefthand", "righthand")
PART_SLICES: dict[str, slice] = {
    "body": slice(0, 17),
    "foot": slice(17, 23),
    "face": slice(23, 91),
    "lefthand": slice(91, 112),
    "righthand": slice(112, 133),
}
PART_FIELDS: dict[str, str] = {
    "body": "keypoints",
    "foot": "foot_kpts",
    "face": "face_kpts",
    "lefthand": "lefthand_kpts",
    "righthand": "righthand_kpts",
}
# Parts that carry a box (the order of `part_boxes` everywhere: face, left hand, right hand).
BOX_PARTS: tuple[str, ...] = ("face", "lefthand", "righthand")

_SIGMAS_BODY = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                0.107, 0.107, 0.087, 0.087, 0.089, 0.089]
_SIGMAS_FOOT = [0.068, 0.066, 0.066, 0.092, 0.094, 0.094]
_SIGMAS_FACE = [0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031, 0.025, 0.020, 0.023, 0.029, 0.032,
                0.037, 0.038, 0.043, 0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012, 0.012, 0.011,
                0.011, 0.013, 0.015, 0.009, 0.007, 0.007, 0.007, 0.012, 0.009, 0.008, 0.016, 0.010,
                0.017, 0.011, 0.009, 0.011, 0.009, 0.007, 0.013, 0.008, 0.011, 0.012, 0.010, 0.034,
                0.008, 0.008, 0.009, 0.008, 0.008, 0.007, 0.010, 0.008, 0.009, 0.009, 0.009, 0.007,
                0.007, 0.008, 0.011, 0.008, 0.008, 0.008, 0.010, 0.008]
_SIGMAS_HAND = [0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022,
                0.026, 0.017, 0.021, 0.021, 0.032, 0.020, 0.019, 0.022, 0.031]
SIGMAS: np.ndarray = np.array(
    _SIGMAS_BODY + _SIGMAS_FOOT + _SIGMAS_FACE + _SIGMAS_HAND + _SIGMAS_HAND, dtype=np.float64
)
SIGMAS.setflags(write=False)

# Global-index flip pairs (from the `swap` fields of the official dataset description).
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    # body
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
    # foot
    (17, 20), (18, 21), (19, 22),
    # face: jaw, brows, nose, eyes, mouth
    (23, 39), (24, 38), (25, 37), (26, 36), (27, 35), (28, 34), (29, 33), (30, 32),
    (40, 49), (41, 48), (42, 47), (43, 46), (44, 45),
    (54, 58), (55, 57),
    (59, 68), (60, 67), (61, 66), (62, 65), (63, 70), (64, 69),
    (71, 77), (72, 76), (73, 75), (78, 82), (79, 81), (83, 87), (84, 86), (88, 90),
    # hands
    *((91 + i, 112 + i) for i in range(21)),
)


def _permutation(n: int, pairs: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> np.ndarray:
    perm = np.arange(n)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    perm.setflags(write=False)
    return perm


# FLIP_INDEX[k] is the keypoint that k becomes after a horizontal flip.
FLIP_INDEX: np.ndarray = _permutation(NUM_KEYPOINTS, FLIP_PAIRS)
# Face-only (68) flip permutation, for FaceHead heatmaps.
FACE_FLIP_INDEX: np.ndarray = _permutation(
    68, [(a - 23, b - 23) for a, b in FLIP_PAIRS if 23 <= a < 91]
)


def _body_channel_flip() -> np.ndarray:
    """The 38 BodyNet channels under a horizontal flip: keypoints by their pairs, box corners
    top-left <-> top-right and bottom-right <-> bottom-left, left-hand box <-> right-hand box."""
    perm = list(FLIP_INDEX[:NUM_BODY_KEYPOINTS])
    corner_flip = (1, 0, 3, 2, 4)  # TL, TR, BR, BL, C
    part_flip = (0, 2, 1)  # face stays, hands swap
    for p in range(3):
        for c in range(5):
            perm.append(NUM_BODY_KEYPOINTS + 5 * part_flip[p] + corner_flip[c])
    out = np.array(perm)
    out.setflags(write=False)
    return out


BODY_CHANNEL_FLIP_INDEX: np.ndarray = _body_channel_flip()

# COCO body skeleton (1-indexed pairs, as in the released `categories[0].skeleton`).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)

# ImageNet normalisation of RGB images in [0, 255].
IMAGENET_MEAN: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# Face landmark indices (within the 68) of the outer eye corners: inter-ocular normalisation.
FACE_OUTER_EYE_CORNERS: tuple[int, int] = (36, 45)
