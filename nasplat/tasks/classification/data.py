"""Image-classification data: the ImageFolder layout, its transforms, and two data sets to try.

Layout (what torchvision's ImageFolder reads, and what most users already have):

    <root>/train/<class name>/<image files>
    <root>/val/<class name>/<image files>

Class names are the folder names, sorted; a class's label is its position in that order, so train
and val must hold the same class folders. Images are .png .jpg .jpeg .bmp .webp (any case);
other files are ignored, and so are hidden files and folders (a name starting with "."): macOS
writes `._photo.jpg` resource files and Jupyter `.ipynb_checkpoints` folders into data sets, and
neither is an image or a class.

Transforms follow Once-for-All's ImageNet recipe, written with Pillow (bilinear) and numpy:
- training: a random resized crop (area fraction `scale`, aspect ratio `ratio`, log-uniform) to
  R x R and an optional horizontal flip, drawn from a numpy Generator seeded by (seed, epoch,
  index), so an epoch's augmentation does not depend on which worker loads which image;
- evaluation: the shorter side resized to round(R / crop_fraction), then the centre R x R.
Both end in `(pixel / 255 - mean) / std`.

Two data sets to try a search with, both written once into the layout above (atomically, with a
marker file recording how they were made): `synthesize_image_folder` draws shapes (learnable by
a small CNN, clearly harder for a linear model on raw pixels) and `write_digits_image_folder`
writes scikit-learn's 1,797 handwritten digits. Neither has a meaningful mirror image (the shapes'
stripe orientations 45 and 135 degrees swap under a flip; so do a 2 and a mirrored 2): train them
with `AugmentConfig(flip=False)`.
"""

from __future__ import annotations

import colorsys
import io
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from nasplat.errors import DataError
from nasplat.files import atomic_write_json, read_json

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The file a generator writes last into a data set it made: its presence means the folder is
# complete, and its content says with which parameters it was made.
MARKER_NAME = "nasplat_dataset.json"

# ------------------------------------------------------------------------------------------------
# The layout
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFolderIndex:
    """The images of one split of an ImageFolder data set.

    root: the data set folder (holding `train/` and `val/`).
    split: "train" or "val".
    classes: the class names (folder names), sorted; label i is `classes[i]`.
    samples: (path relative to `<root>/<split>`, POSIX separators; label) per image, sorted by
        label then path, so the order is the same on every machine.
    """

    root: Path
    split: str
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]

    @property
    def directory(self) -> Path:
        """`<root>/<split>`."""
        return self.root / self.split

    def path(self, i: int) -> Path:
        """The file of sample `i`."""
        return self.directory / self.samples[i][0]


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _class_folders(split_dir: Path) -> list[str]:
    """The sorted names of the (non-hidden) folders in `split_dir`. Raises DataError naming
    `split_dir` when it is missing, not a folder or unreadable."""
    if not split_dir.exists():
        raise DataError("split folder not found; expected <root>/<split>/<class name>/<images>",
                        source=str(split_dir))
    if not split_dir.is_dir():
        raise DataError("is not a folder; expected <root>/<split>/<class name>/<images>", source=str(split_dir))
    try:
        return sorted(e.name for e in os.scandir(split_dir) if _visible(e.name) and e.is_dir())
    except OSError as e:
        raise DataError(f"cannot list the folder ({e.strerror})", source=str(split_dir)) from e


def _images_in(class_dir: Path) -> list[str]:
    """The image files under `class_dir` (sub-folders included, not followed through symbolic
    links, which could loop), as sorted POSIX paths relative to `class_dir`."""
    found: list[str] = []

    def fail(e: OSError) -> None:
        raise DataError(f"cannot list the folder ({e.strerror})", source=str(e.filename or class_dir)) from e

    for folder, dirs, files in os.walk(class_dir, onerror=fail):
        dirs[:] = [d for d in dirs if _visible(d)]
        rel = Path(folder).relative_to(class_dir)
        found += [(rel / f).as_posix() for f in files
                  if _visible(f) and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def _preview(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def scan_image_folder(root: str | Path, split: str) -> ImageFolderIndex:
    """Index the images of `<root>/<split>/<class name>/`.

    Raises DataError, one line naming the path at fault: an unknown split; a missing or
    unreadable split folder; no class folders; a class folder with no image; fewer than 2
    classes; and, when the other split's folder exists, class folders that differ from it (the
    labels would mean different classes in training and evaluation)."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}", source=str(root))
    split_dir = root / split
    classes = _class_folders(split_dir)
    if not classes:
        raise DataError("no class folders; expected <root>/<split>/<class name>/<images>", source=str(split_dir))
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        images = _images_in(split_dir / name)
        if not images:
            raise DataError(f"class folder has no images ({', '.join(IMAGE_EXTENSIONS)})",
                            source=str(split_dir / name))
        samples += [(f"{name}/{image}", label) for image in images]
    if len(classes) < 2:
        raise DataError(f"only 1 class folder ({classes[0]!r}); classification needs at least 2",
                        source=str(split_dir))
    other = root / next(s for s in SPLITS if s != split)
    if other.is_dir():
        other_classes = _class_folders(other)
        if other_classes != classes:
            only_here = [c for c in classes if c not in set(other_classes)]
            only_there = [c for c in other_classes if c not in set(classes)]
            raise DataError(
                f"{split} and {other.name} have different class folders"
                f" (only in {split}: {_preview(only_here) or 'none'}; only in {other.name}: {_preview(only_there) or 'none'})",
                source=str(root))
    return ImageFolderIndex(root=root, split=split, classes=tuple(classes), samples=tuple(samples))


def load_rgb(path: str | Path) -> Image.Image:
    """The image at `path`, decoded and converted to RGB (greyscale, palette, alpha: all become
    three channels). Raises DataError naming the file when it cannot be read or decoded."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # `convert` decodes the whole image: a truncated file fails here
    except Image.DecompressionBombError as e:
        raise DataError(f"image refused as too large ({e})", source=str(path)) from e
    except (OSError, SyntaxError, ValueError) as e:  # PIL reports corrupt data with all three
        raise DataError(f"cannot read the image ({e})", source=str(path)) from e


# ------------------------------------------------------------------------------------------------
# Transforms
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """How images become tensors (the defaults are Once-for-All's ImageNet recipe).

    Raises DataError (key `augment.<field>`) for a value outside its range.
    """

    scale: tuple[float, float] = (0.35, 1.0)  # area fraction of the random crop (OFA: 0.35, not 0.08)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio (w / h) of the random crop
    flip: bool = True  # random horizontal flip in training (off where a mirror image is another class)
    crop_fraction: float = 0.875  # evaluation: the centre R x R of the image resized to R / crop_fraction
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per channel, of pixels in [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise DataError(f"scale {self.scale} must satisfy 0 < low <= high <= 1", key="augment.scale")
        lo, hi = self.ratio
        if not 0.0 < lo <= hi:
            raise DataError(f"ratio {self.ratio} must satisfy 0 < low <= high", key="augment.ratio")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise DataError(f"crop_fraction {self.crop_fraction} not in (0, 1]", key="augment.crop_fraction")
        if len(self.mean) != 3:
            raise DataError(f"mean {self.mean} must have 3 values (R, G, B)", key="augment.mean")
        if len(self.std) != 3 or not all(s > 0 for s in self.std):
            raise DataError(f"std {self.std} must have 3 positive values (R, G, B)", key="augment.std")


# Bounded, as torchvision's: a crop that fits is found within a few tries for any sensible
# scale/ratio; after that the fallback below always fits.
_CROP_TRIES = 10


def _random_crop_box(width: int, height: int, cfg: AugmentConfig, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random (left, top, right, bottom) box of area fraction in `cfg.scale` and aspect ratio
    log-uniform in `cfg.ratio`; when none fits in `_CROP_TRIES` draws, the largest centred box
    whose ratio is clamped into `cfg.ratio`."""
    area = width * height
    log_lo, log_hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
    for _ in range(_CROP_TRIES):
        target = area * rng.uniform(cfg.scale[0], cfg.scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < cfg.ratio[0]:
        w, h = width, max(1, int(round(width / cfg.ratio[0])))
    elif aspect > cfg.ratio[1]:
        w, h = max(1, int(round(height * cfg.ratio[1]))), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_transform(image: Image.Image, resolution: int, cfg: AugmentConfig, rng: np.random.Generator) -> Image.Image:
    """A random resized crop of `image` to `resolution` x `resolution` (bilinear), flipped
    horizontally with probability 1/2 when `cfg.flip`. Every draw comes from `rng`."""
    box = _random_crop_box(image.width, image.height, cfg, rng)
    # One resize with a source box crops and scales in one pass (no intermediate image).
    out = image.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box)
    if cfg.flip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def eval_transform(image: Image.Image, resolution: int, cfg: AugmentConfig) -> Image.Image:
    """`image` with its shorter side resized to round(resolution / cfg.crop_fraction) (the
    longer side keeps the aspect ratio, rounded), then its centre `resolution` x `resolution`
    (the top-left corner at ((w - R) // 2, (h - R) // 2) of the resized image)."""
    width, height = image.size
    short = round(resolution / cfg.crop_fraction)
    factor = short / min(width, height)
    new_w = short if width <= height else int(round(width * factor))
    new_h = short if height < width else int(round(height * factor))
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    if (new_w, new_h) == (width, height):  # no resize needed: an exact crop, no resampling
        return image.crop((left, top, left + resolution, top + resolution))
    # The crop's box in source pixels: resampling only that box to R x R gives the same pixels as
    # resizing the whole image and cropping (same filter scale, same sample positions), faster.
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy)
    return image.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box)


def to_tensor(image: Image.Image, cfg: AugmentConfig) -> torch.Tensor:
    """An RGB image [H, W] -> float32 [3, H, W], `(pixel / 255 - mean) / std` per channel."""
    pixels = np.asarray(image, dtype=np.float32)  # [H, W, 3]
    mean = np.asarray(cfg.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(cfg.std, dtype=np.float32)
    normed = (pixels * (1.0 / 255.0) - mean) * inv_std  # [H, W, 3]
    return torch.from_numpy(np.ascontiguousarray(normed.transpose(2, 0, 1)))  # [3, H, W]


def eval_tensor(image: Image.Image, resolution: int, cfg: AugmentConfig) -> torch.Tensor:
    """The validation pipeline on one RGB image: `eval_transform` to `resolution` x `resolution`,
    then `to_tensor`; float32 [3, R, R]. What a validation item holds, and what a prediction with
    an exported classifier feeds its network."""
    return to_tensor(eval_transform(image, resolution, cfg), cfg)


# ------------------------------------------------------------------------------------------------
# The data set
# ------------------------------------------------------------------------------------------------


class ClassificationDataset(Dataset[dict[str, torch.Tensor]]):
    """One split of an ImageFolder data set as `{"image": float32 [3, R, R], "label": int64 []}`.

    `train` picks the transform (random resized crop and flip, or resize and centre crop), not
    the split: BN recalibration, say, reads the train split with the evaluation transform.
    Training draws come from `numpy.random.default_rng([seed, epoch, index])`: the same for a
    given (seed, epoch, index) whatever worker loads the item. Call `set_epoch` before each
    epoch's iteration starts (a DataLoader's workers copy the data set when its iterator is
    created; with `persistent_workers=True` they keep the epoch they copied).

    Raises DataError as `scan_image_folder` at construction, and naming the file when an image
    cannot be decoded; DataError (key `resolution`, `seed`) for a resolution below 1 or a negative
    seed.
    """

    def __init__(self, root: str | Path, split: str, *, train: bool, resolution: int, seed: int = 0,
                 augment: AugmentConfig | None = None) -> None:
        if resolution < 1:
            raise DataError(f"resolution {resolution} must be at least 1", key="resolution")
        if seed < 0:
            raise DataError(f"seed {seed} must be non-negative", key="seed")
        self.index = scan_image_folder(root, split)
        self.train = train
        self.resolution = int(resolution)
        self.seed = int(seed)
        self.augment = augment or AugmentConfig()
        self.epoch = 0

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names; label i is `classes[i]`."""
        return self.index.classes

    @property
    def num_classes(self) -> int:
        return len(self.index.classes)

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation draws of `epoch` (>= 0) from now on. Raises DataError for a
        negative epoch."""
        if epoch < 0:
            raise DataError(f"epoch {epoch} must be non-negative", key="epoch")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        label = self.index.samples[i][1]
        image = load_rgb(self.index.path(i))
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            tensor = to_tensor(train_transform(image, self.resolution, self.augment, rng), self.augment)
        else:
            tensor = eval_tensor(image, self.resolution, self.augment)
        return {"image": tensor, "label": torch.tensor(label, dtype=torch.int64)}


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Items of a `ClassificationDataset` -> `{"image": [B, 3, R, R], "label": [B]}`. Raises
    ValueError for no items."""
    if not items:
        raise ValueError("collate needs at least one item")
    return {"image": torch.stack([it["image"] for it in items]),  # [B, 3, R, R]
            "label": torch.stack([it["label"] for it in items])}  # [B]


# ------------------------------------------------------------------------------------------------
# Writing a data set once
# ------------------------------------------------------------------------------------------------


def _read_marker(root: Path) -> dict[str, Any] | None:
    marker = root / MARKER_NAME
    if not marker.is_file():
        return None
    found = read_json(marker, what="data set marker", error=DataError, limit=1 << 20)
    if not isinstance(found, dict):
        raise DataError("not a data set marker (expected a JSON object)", source=str(marker))
    return found


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _check_existing(root: Path, params: dict[str, Any]) -> bool:
    """True when `root` is a complete data set made with `params`; False when it is absent or an
    empty folder. Raises DataError for anything else (it is never overwritten)."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise DataError("exists and is not a folder; give a folder for the data set", source=str(root))
    found = _read_marker(root)
    if found == params:
        return True
    if found is not None:
        raise DataError(f"holds a data set made with {_describe(found)}, not {_describe(params)}; give another "
                        f"folder (nothing was changed)", source=str(root))
    if any(root.iterdir()):
        raise DataError(f"exists, is not empty and has no {MARKER_NAME}: not a data set this generator made; give "
                        f"another folder (nothing was changed)", source=str(root))
    return False


def _new_folder(parent: Path, name: str) -> Path:
    # `tempfile.mkdtemp` would make the folder 0700, and the published data set with it.
    for _ in range(100):
        tmp = parent / f".{name}.{os.urandom(4).hex()}.tmp"  # unique, not reproducible: no seed
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue
    raise DataError("no unused temporary folder name", source=str(parent))


def write_once(root: str | Path, params: dict[str, Any], fill: Callable[[Path], None]) -> Path:
    """Make the data set `root` by calling `fill(folder)` on a new hidden folder beside it, then
    writing the marker (`params`, JSON) and renaming the folder to `root`; returns `root`.

    A data set already at `root` with the same `params` is returned at once, untouched, so an
    interrupted or concurrent run costs nothing to repeat: a folder without its marker never
    becomes `root`. The temporary folder is removed on any failure, including KeyboardInterrupt.
    Raises DataError naming `root`: it holds a data set made with other parameters, or anything
    else but an empty folder; or it cannot be written."""
    root = Path(root)
    if _check_existing(root, params):
        return root
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_folder(root.parent, root.name)
    except OSError as e:
        raise DataError(f"cannot create the data set folder ({e.strerror})", source=str(root)) from e
    try:
        fill(tmp)
        atomic_write_json(params, tmp / MARKER_NAME)  # last: a folder with the marker is complete
        try:
            os.rename(tmp, root)  # replaces an empty folder on POSIX
        except OSError:
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()  # an empty folder a user made for it (Windows does not replace one)
                os.rename(tmp, root)
            elif _check_existing(root, params):  # another process published the same data set first
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot write the data set ({e.strerror or e})", source=str(root)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _png(pixels: np.ndarray) -> bytes:
    """Deterministic PNG bytes of a uint8 [H, W] or [H, W, 3] array (Pillow writes no time)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# A synthetic data set: shapes
# ------------------------------------------------------------------------------------------------

# Bump when the drawing changes: a marker written by another version no longer matches.
_SYNTH_VERSION = 1
_SHAPES = ("disc", "square", "triangle", "ring", "cross", "star", "hexagon", "frame")
_HUES = (0.0, 0.14, 0.33, 0.58, 0.83)  # red, yellow, green, blue, magenta (HSV hue, in turns)
_STRIPE_DEGREES = (0.0, 45.0, 90.0, 135.0)
# Class c has shape c % 8 and colour family c % 5: unique for c < 40 (8 and 5 are coprime).
MAX_SYNTH_CLASSES = len(_SHAPES) * len(_HUES)
_SPLIT_CODES = {"train": 0, "val": 1}
_SUPERSAMPLE = 2  # draw at twice the size and average 2 x 2 blocks: anti-aliased edges


def synth_class(c: int) -> tuple[str, float, float]:
    """(shape, hue in turns, stripe angle in degrees) of synthetic class `c`.

    Classes share attributes so that none alone tells them apart: the colour family repeats every
    5 classes, the shape every 8 and the stripe angle every 4 (shifted by c // 8, so classes of the
    same shape have different stripes)."""
    return _SHAPES[c % len(_SHAPES)], _HUES[c % len(_HUES)], _STRIPE_DEGREES[(c + c // len(_SHAPES)) % len(_STRIPE_DEGREES)]


def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int, offset: float) -> np.ndarray:
    """Inside a regular polygon of circumradius 1: every edge's outward normal projection is at
    most the apothem."""
    inside = np.ones(u.shape, dtype=bool)
    apothem = math.cos(math.pi / sides)
    for k in range(sides):
        a = offset + 2.0 * math.pi * k / sides
        inside &= u * math.cos(a) + v * math.sin(a) <= apothem
    return inside


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside `shape` of radius about 1 at object coordinates (u, v) (v down)."""
    r = np.hypot(u, v)
    if shape == "disc":
        return r <= 0.9
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.78
    if shape == "triangle":  # apex up: the bottom edge's normal points down (+v)
        return _regular_polygon(u, v, 3, math.pi / 2)
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "star":
        theta = np.arctan2(v, u) + math.pi / 2  # a point straight up
        return r <= 0.42 + 0.6 * ((1.0 + np.cos(5.0 * theta)) / 2.0) ** 2
    if shape == "hexagon":
        return _regular_polygon(u, v, 6, 0.0)
    if shape == "frame":
        m = np.maximum(np.abs(u), np.abs(v))
        return (m <= 0.85) & (m >= 0.5)
    raise AssertionError(shape)  # unreachable: `_SHAPES` lists every shape drawn here


def _rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32) * 255.0


def render_synthetic(c: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 [size, size, 3] image of synthetic class `c`, every draw from `rng`.

    A striped shape of the class's colour family on a gradient background with clutter (strokes
    and blobs of any colour) and pixel noise; position, radius, rotation, stripe period and phase,
    and colour are jittered per image."""
    shape, hue, stripe_deg = synth_class(c)
    n = size * _SUPERSAMPLE
    coords = (np.arange(n, dtype=np.float32) + 0.5) / _SUPERSAMPLE  # pixel units of the final image
    ys, xs = np.meshgrid(coords, coords, indexing="ij")  # [n, n] each
    # Background: a muted two-colour gradient in a random direction.
    a, b = (_rgb(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.25, 0.85)) for _ in range(2))
    g = rng.uniform(0.0, 2.0 * math.pi)
    t = ((xs * math.cos(g) + ys * math.sin(g)) / size + 1.0) / 2.0  # [n, n], about in [0, 1]
    img = a * (1.0 - t[..., None]) + b * t[..., None]  # [n, n, 3]
    # Clutter of any colour, so the mean colour of an image is a weak hint of its class.
    for _ in range(int(rng.integers(2, 6))):
        colour = _rgb(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.2, 0.95))
        x0, y0 = rng.uniform(0, size, 2)
        if rng.random() < 0.5:  # a blob
            mask = np.hypot(xs - x0, ys - y0) <= size * rng.uniform(0.04, 0.12)
        else:  # a stroke: within half a width of the segment (x0, y0)-(x1, y1)
            x1, y1 = rng.uniform(0, size, 2)
            dx, dy = x1 - x0, y1 - y0
            s = np.clip(((xs - x0) * dx + (ys - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
            mask = np.hypot(xs - (x0 + s * dx), ys - (y0 + s * dy)) <= size * rng.uniform(0.02, 0.05)
        img[mask] = colour
    # The object.
    radius = size * rng.uniform(0.2, 0.34)
    cx, cy = rng.uniform(0.8 * radius, size - 0.8 * radius, 2)
    rot = math.radians(rng.uniform(-20.0, 20.0))  # small: a square turned by 45 degrees would be a diamond
    u = ((xs - cx) * math.cos(rot) + (ys - cy) * math.sin(rot)) / radius
    v = (-(xs - cx) * math.sin(rot) + (ys - cy) * math.cos(rot)) / radius
    inside = _shape_mask(shape, u, v)
    colour = _rgb(hue + rng.normal(0.0, 0.03), rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    # Stripes in the image frame (their angle is a class attribute, the shape's rotation is not).
    phi = math.radians(stripe_deg + rng.uniform(-8.0, 8.0))
    period = size * rng.uniform(0.12, 0.18)
    wave = np.sin(2.0 * math.pi * (xs * math.cos(phi) + ys * math.sin(phi)) / period + rng.uniform(0, 2 * math.pi))
    shade = 1.0 - 0.55 * (0.5 + 0.5 * np.tanh(3.0 * wave))  # [n, n]: dark stripes on the colour
    img[inside] = colour * shade[inside][:, None]
    # Average the supersampled blocks, then pixel noise.
    img = img.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))  # [size, size, 3]
    img += rng.normal(0.0, rng.uniform(3.0, 10.0), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def synthesize_image_folder(root: str | Path, *, classes: int = 10, train_per_class: int, val_per_class: int,
                            size: int = 32, seed: int = 0) -> Path:
    """Write a synthetic data set of striped shapes into the ImageFolder layout at `root`
    (`train/class_00/00000.png`, ...) and return `root`.

    Image i of class c in a split is a pure function of (seed, split, c, i) (`render_synthetic`):
    the same parameters give the same bytes (with the same numpy, zlib and Pillow). Written once
    (see `write_once`): the same call again returns at once.

    Raises DataError: classes not in [2, 40], fewer than 1 image per class in a split, size below
    8, a negative seed (keys name the argument); `root` holds something else."""
    checks = (("classes", classes, 2 <= classes <= MAX_SYNTH_CLASSES, f"[2, {MAX_SYNTH_CLASSES}]"),
              ("train_per_class", train_per_class, train_per_class >= 1, "at least 1"),
              ("val_per_class", val_per_class, val_per_class >= 1, "at least 1"),
              ("size", size, size >= 8, "at least 8"),
              ("seed", seed, seed >= 0, "non-negative"))
    for key, value, ok, allowed in checks:
        if not ok:
            raise DataError(f"{key} {value} not allowed: {allowed}", source=str(root), key=key)
    params = {"generator": "nasplat.synthetic_shapes", "version": _SYNTH_VERSION, "classes": classes,
              "train_per_class": train_per_class, "val_per_class": val_per_class, "size": size, "seed": seed}

    def fill(folder: Path) -> None:
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for c in range(classes):
                out = folder / split / f"class_{c:02d}"
                out.mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, _SPLIT_CODES[split], c, i])
                    (out / f"{i:05d}.png").write_bytes(_png(render_synthetic(c, size, rng)))

    return write_once(root, params, fill)


# ------------------------------------------------------------------------------------------------
# Real data: scikit-learn's handwritten digits
# ------------------------------------------------------------------------------------------------


def write_digits_image_folder(root: str | Path, *, val_fraction: float = 0.25, seed: int = 0, size: int = 32) -> Path:
    """Write scikit-learn's 1,797 handwritten digits (UCI, 8 x 8, values 0..16) into the
    ImageFolder layout at `root` (classes `0` to `9`, files `<index in load_digits>.png`) and
    return `root`.

    Each image is scaled to 0..255 greyscale and resized to `size` x `size` (bilinear). The split
    is stratified and seeded: round(n * val_fraction) images of each digit (at least 1, at most
    n - 1) go to val. Written once (see `write_once`): the same call again returns at once.

    Raises DataError: val_fraction not in (0, 1), size below 8, a negative seed; scikit-learn is
    not installed; `root` holds something else."""
    checks = (("val_fraction", val_fraction, 0.0 < val_fraction < 1.0, "in (0, 1)"),
              ("size", size, size >= 8, "at least 8"),
              ("seed", seed, seed >= 0, "non-negative"))
    for key, value, ok, allowed in checks:
        if not ok:
            raise DataError(f"{key} {value} not allowed: {allowed}", source=str(root), key=key)
    try:
        from sklearn.datasets import load_digits  # optional: only this writer needs it
    except ImportError as e:
        raise DataError("the digits data set needs scikit-learn: pip install scikit-learn") from e
    params = {"generator": "sklearn.load_digits", "version": 1, "val_fraction": float(val_fraction), "seed": seed,
              "size": size}

    def fill(folder: Path) -> None:
        digits = load_digits()  # shipped with scikit-learn: nothing is downloaded
        images = np.asarray(digits.images, dtype=np.float64)  # [1797, 8, 8], 0..16
        targets = np.asarray(digits.target)
        for label in range(10):
            members = np.flatnonzero(targets == label)
            n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
            val = set(np.random.default_rng([seed, label]).permutation(members)[:n_val].tolist())
            for split in SPLITS:
                (folder / split / str(label)).mkdir(parents=True)
            for i in members.tolist():
                grey = Image.fromarray(np.clip(np.rint(images[i] * (255.0 / 16.0)), 0, 255).astype(np.uint8))
                grey = grey.resize((size, size), Image.Resampling.BILINEAR)
                split = "val" if i in val else "train"
                (folder / split / str(label) / f"{i:04d}.png").write_bytes(_png(np.asarray(grey)))

    return write_once(root, params, fill)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "MARKER_NAME",
    "MAX_SYNTH_CLASSES",
    "SPLITS",
    "AugmentConfig",
    "ClassificationDataset",
    "ImageFolderIndex",
    "collate",
    "eval_tensor",
    "eval_transform",
    "load_rgb",
    "render_synthetic",
    "scan_image_folder",
    "synth_class",
    "synthesize_image_folder",
    "to_tensor",
    "train_transform",
    "write_digits_image_folder",
    "write_once",
]
