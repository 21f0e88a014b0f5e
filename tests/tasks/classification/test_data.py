"""Classification data: the ImageFolder scan and its errors, the transforms, the data set, and the
two data sets written once (synthetic shapes, scikit-learn's digits)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nasplat.errors import DataError
from nasplat.tasks.classification import data as cdata
from nasplat.tasks.classification.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MARKER_NAME,
    AugmentConfig,
    ClassificationDataset,
    collate,
    eval_transform,
    scan_image_folder,
    synthesize_image_folder,
    write_digits_image_folder,
    write_once,
)

def _save(path: Path, pixels: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _folder(root: Path, layout: dict[str, dict[str, int]], size: tuple[int, int] = (12, 10)) -> Path:
    """`layout[split][class]` images of `size` (h, w) per class, each different."""
    for split, classes in layout.items():
        for k, (name, count) in enumerate(classes.items()):
            for i in range(count):
                _save(root / split / name / f"{i}.png", _noise((*size, 3), seed=100 * k + i))
    return root


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# The scan


def test_scan_sorts_classes_and_samples_and_keeps_only_images(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"train": {"zebra": 2, "ant": 1}, "val": {"zebra": 1, "ant": 1}})
    split = root / "train"
    _save(split / "ant" / "UPPER.JPG", _noise((8, 8, 3)), fmt="JPEG")
    _save(split / "ant" / "nested" / "deep.webp", _noise((8, 8, 3)), fmt="WEBP")
    (split / "ant" / "notes.txt").write_text("not an image")
    (split / "ant" / "._1.png").write_bytes(b"macOS resource fork, not an image")
    (split / ".ipynb_checkpoints").mkdir()
    (split / "README.md").write_text("a file beside the class folders")

    index = scan_image_folder(root, "train")
    assert index.classes == ("ant", "zebra")
    assert index.samples == (("ant/0.png", 0), ("ant/UPPER.JPG", 0), ("ant/nested/deep.webp", 0),
                             ("zebra/0.png", 1), ("zebra/1.png", 1))
    assert index.path(3) == split / "zebra" / "0.png"


def _missing_split(root: Path) -> Path:
    _folder(root, {"val": {"a": 1, "b": 1}})
    return root / "train"


def _no_classes(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "train" / "loose.png").write_bytes(b"")
    return root / "train"


def _empty_class(root: Path) -> Path:
    _folder(root, {"train": {"a": 1, "b": 1}})
    (root / "train" / "c").mkdir()
    (root / "train" / "c" / "labels.csv").write_text("x")
    return root / "train" / "c"


def _different_classes(root: Path) -> Path:
    _folder(root, {"train": {"a": 1, "b": 1}, "val": {"a": 1, "c": 1}})
    return root


def _one_class(root: Path) -> Path:
    _folder(root, {"train": {"only": 2}})
    return root / "train"


@pytest.mark.parametrize("make, words", [
    (_missing_split, "split folder not found"),
    (_no_classes, "no class folders"),
    (_empty_class, "no images"),
    (_different_classes, "different class folders (only in train: 'b'; only in val: 'c')"),
    (_one_class, "at least 2"),
])
def test_scan_errors_are_one_line_naming_the_path(tmp_path: Path, make, words: str) -> None:
    at_fault = make(tmp_path / "data")
    with pytest.raises(DataError) as info:
        scan_image_folder(tmp_path / "data", "train")
    message = str(info.value)
    assert message.startswith(f"{at_fault}: ") and words in message and "\n" not in message


def test_scan_refuses_an_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'test'"):
        scan_image_folder(tmp_path, "test")


# ------------------------------------------------------------------------------------------------
# The data set and its transforms


def test_items_are_normalised_float_images_and_int64_labels(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for split in ("train", "val"):
        _save(root / split / "a" / "grey.png", np.full((9, 13), 51, np.uint8))  # greyscale: becomes RGB
        rgba = np.zeros((7, 7, 4), np.uint8)
        rgba[..., :3] = (255, 0, 102)
        rgba[..., 3] = 255
        _save(root / split / "b" / "rgba.png", rgba)
    for train in (True, False):
        ds = ClassificationDataset(root, "train", train=train, resolution=5)
        assert (len(ds), ds.num_classes, ds.classes) == (2, 2, ("a", "b"))
        for i, rgb in ((0, (51, 51, 51)), (1, (255, 0, 102))):
            item = ds[i]
            assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 5, 5)
            assert item["label"].dtype == torch.int64 and item["label"].shape == () and int(item["label"]) == i
            want = [(v / 255 - m) / s for v, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD)]
            assert torch.allclose(item["image"], torch.tensor(want).view(3, 1, 1).expand(3, 5, 5), atol=1e-5)
    batch = collate([ds[0], ds[1], ds[0]])
    assert batch["image"].shape == (3, 3, 5, 5) and batch["label"].tolist() == [0, 1, 0]


def _distinct_image(h: int, w: int) -> np.ndarray:
    """Every pixel different: red = column, green = row."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :] * 10
    img[..., 1] = np.arange(h)[:, None] * 10
    return img


@pytest.mark.parametrize("h, w, rows, cols", [(8, 8, (2, 6), (2, 6)), (12, 8, (4, 8), (2, 6)), (8, 11, (2, 6), (3, 7))])
def test_eval_takes_the_centre_crop(tmp_path: Path, h: int, w: int, rows: tuple[int, int], cols: tuple[int, int]) -> None:
    # R = 4 and crop_fraction 0.5: the shorter side is already round(4 / 0.5) = 8, so no resize.
    pixels = _distinct_image(h, w)
    for split in ("train", "val"):
        _save(tmp_path / split / "a" / "x.png", pixels)
        _save(tmp_path / split / "b" / "x.png", pixels)
    cfg = AugmentConfig(crop_fraction=0.5, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    ds = ClassificationDataset(tmp_path, "val", train=False, resolution=4, augment=cfg)
    got = (ds[0]["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # [4, 4, 3]
    assert np.array_equal(got, pixels[rows[0]:rows[1], cols[0]:cols[1]])
    assert torch.equal(ds[0]["image"], ds[0]["image"])  # no randomness


def test_eval_crop_equals_resizing_the_whole_image_then_cropping() -> None:
    image = Image.fromarray(_noise((30, 20, 3)))
    out = eval_transform(image, 8, AugmentConfig())  # shorter side 20 -> round(8 / 0.875) = 9, longer 14
    reference = image.resize((9, 14), Image.Resampling.BILINEAR).crop((0, 3, 8, 11))
    diff = np.abs(np.asarray(out, np.int16) - np.asarray(reference, np.int16))
    assert out.size == (8, 8) and diff.max() <= 1  # the same up to rounding


def test_train_augmentation_is_a_function_of_seed_epoch_and_index(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"train": {"a": 2, "b": 2}}, size=(24, 20))
    make = lambda seed: ClassificationDataset(root, "train", train=True, resolution=8, seed=seed)  # noqa: E731
    a, b = make(0), make(0)
    forward = [a[i]["image"] for i in range(4)]
    backward = [b[i]["image"] for i in reversed(range(4))][::-1]  # another worker order
    assert all(torch.equal(x, y) for x, y in zip(forward, backward))
    a.set_epoch(1)
    assert not any(torch.equal(a[i]["image"], forward[i]) for i in range(4))
    a.set_epoch(0)
    assert torch.equal(a[2]["image"], forward[2])
    assert not torch.equal(make(1)[2]["image"], forward[2])


def test_flip_is_drawn_only_when_enabled(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"train": {"a": 1, "b": 1}}, size=(8, 8))
    full_crop = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    make = lambda train, **kw: ClassificationDataset(  # noqa: E731
        root, "train", train=train, resolution=8, augment=AugmentConfig(**full_crop, **kw))
    plain, flip, original = make(True, flip=False), make(True, flip=True), make(False, crop_fraction=1.0)
    flipped = 0
    for epoch in range(8):
        plain.set_epoch(epoch)
        flip.set_epoch(epoch)
        assert torch.equal(plain[0]["image"], original[0]["image"])
        x = flip[0]["image"]
        is_flipped = torch.equal(x, original[0]["image"].flip(-1))
        assert is_flipped or torch.equal(x, original[0]["image"])
        flipped += is_flipped
    assert 0 < flipped < 8


def test_a_corrupt_image_is_a_data_error_naming_it(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"train": {"a": 1, "b": 1}})
    bad = root / "train" / "b" / "0.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    garbage = root / "train" / "b" / "1.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    ds = ClassificationDataset(root, "train", train=False, resolution=4)
    assert ds[0]["image"].shape == (3, 4, 4)
    for i, path in ((1, bad), (2, garbage)):
        with pytest.raises(DataError) as info:
            ds[i]
        assert str(info.value).startswith(f"{path}: cannot read the image")


@pytest.mark.parametrize("field, value", [("scale", (0.0, 1.0)), ("scale", (0.9, 0.5)), ("ratio", (2.0, 1.0)),
                                          ("crop_fraction", 1.5), ("std", (0.2, 0.0, 0.2)), ("mean", (0.5,))])
def test_augment_config_refuses_values_out_of_range(field: str, value: object) -> None:
    with pytest.raises(DataError) as info:
        AugmentConfig(**{field: value})
    assert info.value.key == f"augment.{field}"


# ------------------------------------------------------------------------------------------------
# Synthetic shapes


def test_synthetic_is_deterministic_and_readable(tmp_path: Path) -> None:
    kw = dict(classes=3, train_per_class=2, val_per_class=1, size=16)
    a = synthesize_image_folder(tmp_path / "a", seed=7, **kw)
    b = synthesize_image_folder(tmp_path / "b", seed=7, **kw)
    c = synthesize_image_folder(tmp_path / "c", seed=8, **kw)
    files = _all_bytes(a)
    assert len(files) == 3 * 3 + 1 and files == _all_bytes(b)
    assert json.loads(files[MARKER_NAME]) == {**json.loads((c / MARKER_NAME).read_text()), "seed": 7}
    assert all(files[k] != v for k, v in _all_bytes(c).items() if k.endswith(".png"))
    ds = ClassificationDataset(a, "val", train=False, resolution=16)
    assert ds.classes == ("class_00", "class_01", "class_02") and len(ds) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temporary folder left


def test_synthetic_again_is_untouched_and_other_parameters_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    kw = dict(classes=2, train_per_class=1, val_per_class=1, size=8)
    synthesize_image_folder(root, **kw)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert synthesize_image_folder(root, **kw) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    with pytest.raises(DataError) as info:
        synthesize_image_folder(root, **{**kw, "train_per_class": 2})
    assert str(info.value).startswith(f"{root}: holds a data set made with") and "train_per_class=1" in str(info.value)
    with pytest.raises(DataError, match="holds a data set made with"):
        write_digits_image_folder(root)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps


def test_a_users_folder_is_never_written_into_but_an_empty_one_is_used(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="not a data set this generator made"):
        synthesize_image_folder(mine, classes=2, train_per_class=1, val_per_class=1, size=8)
    assert [p.name for p in mine.iterdir()] == ["train"]
    empty = tmp_path / "empty"
    empty.mkdir()
    synthesize_image_folder(empty, classes=2, train_per_class=1, val_per_class=1, size=8)
    assert (empty / MARKER_NAME).is_file()


def test_an_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def interrupted(c: int, size: int, rng: np.random.Generator) -> np.ndarray:
        calls.append(c)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.zeros((size, size, 3), np.uint8)

    monkeypatch.setattr(cdata, "render_synthetic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthesize_image_folder(tmp_path / "shapes", classes=2, train_per_class=2, val_per_class=1, size=8)
    assert list(tmp_path.iterdir()) == []


def test_a_data_set_published_meanwhile_by_another_process_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "d"
    params = {"generator": "test", "version": 1}

    def fill(folder: Path) -> None:
        (folder / "x").write_text("mine")
        write_once(root, params, lambda other: (other / "x").write_text("theirs"))  # the other process

    assert write_once(root, params, fill) == root
    assert (root / "x").read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.mark.parametrize("key, value", [("classes", 1), ("classes", 41), ("train_per_class", 0), ("size", 4)])
def test_synthetic_refuses_bad_parameters(tmp_path: Path, key: str, value: int) -> None:
    kw = {"classes": 2, "train_per_class": 1, "val_per_class": 1, key: value}
    with pytest.raises(DataError) as info:
        synthesize_image_folder(tmp_path / "s", **kw)
    assert info.value.key == key and not (tmp_path / "s").exists()


def test_synthetic_classes_differ_on_average(tmp_path: Path) -> None:
    root = synthesize_image_folder(tmp_path / "s", classes=6, train_per_class=16, val_per_class=1, size=16)
    index = scan_image_folder(root, "train")
    images = np.stack([np.asarray(Image.open(index.path(i)), np.float32) for i in range(len(index.samples))])
    labels = np.array([label for _, label in index.samples])
    means = np.stack([images[labels == c].mean(axis=0) for c in range(6)])  # [classes, 16, 16, 3]
    rms = np.sqrt(((means[:, None] - means[None]) ** 2).mean(axis=(2, 3, 4)))  # [classes, classes]
    off_diagonal = rms[~np.eye(6, dtype=bool)]
    assert off_diagonal.min() > 5.0  # grey levels


# ------------------------------------------------------------------------------------------------
# scikit-learn's digits


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    return write_digits_image_folder(tmp_path_factory.mktemp("digits") / "d", size=8)


def test_digits_are_all_written_with_a_stratified_split(digits: Path) -> None:
    train = scan_image_folder(digits, "train")
    val = scan_image_folder(digits, "val")
    assert train.classes == val.classes == tuple(str(d) for d in range(10))
    assert len(train.samples) + len(val.samples) == 1797
    names = {Path(p).name for p, _ in train.samples} | {Path(p).name for p, _ in val.samples}
    assert len(names) == 1797
    per_class = np.bincount([label for _, label in val.samples], minlength=10)
    totals = per_class + np.bincount([label for _, label in train.samples], minlength=10)
    assert np.all(np.abs(per_class - totals * 0.25) <= 0.5)  # round(n * 0.25) of every digit
    with Image.open(train.path(0)) as im:
        assert im.size == (8, 8)


def test_digits_are_deterministic(digits: Path, tmp_path: Path) -> None:
    again = write_digits_image_folder(tmp_path / "again", size=8)
    assert _all_bytes(again) == _all_bytes(digits)
    other = write_digits_image_folder(tmp_path / "other", size=8, seed=1)
    assert {p for p, _ in scan_image_folder(other, "val").samples} != {p for p, _ in scan_image_folder(digits, "val").samples}


def test_digits_without_scikit_learn_say_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(DataError, match="pip install scikit-learn"):
        write_digits_image_folder(tmp_path / "d")
    assert not (tmp_path / "d").exists()
