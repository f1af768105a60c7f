"""Procedural shape scenes for semantic segmentation, offline and seeded (numpy only).

Each RGB image (``size`` x ``size``, values in [0, 1]) has a textured background and 1-4 shapes of
K = 5 classes: 0 background, 1 disc, 2 square, 3 triangle, 4 bar, each of random size, position and
colour, drawn in order (a later shape covers an earlier one). A ``hard`` share of the shapes is made
difficult in one of three ways: low contrast (a colour close to the background's), blur (a soft
edge; the label is the alpha > 0.5 region), or occlusion (a rectangle of the scene before the shape
put back over part of it). On the TRAINING split a ``label_flip`` share of all label pixels is
flipped to a neighbouring class on the class boundaries (the noisy, "hard for everyone" band);
the test split keeps clean labels. A ``border`` band around every image is ``IGNORE`` (255) in
both splits. [assumed] The spec fixes only the ingredients; the sizes, colours, noise levels and
the ways of making a shape hard are this module's choices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from curate.core.errors import BadInputError

CLASSES = ("background", "disc", "square", "triangle", "bar")
IGNORE = 255


@dataclass
class ShapesConfig:
    image_size: int = 32
    train: int = 320  # images
    test: int = 128
    hard: float = 0.2  # share of shapes made hard (low contrast, blur or occlusion)
    label_flip: float = 0.05  # share of training label pixels flipped on class boundaries
    border: int = 1  # width of the ignored band around each image
    noise: float = 0.06  # std of the per-pixel texture noise
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise BadInputError(f"image_size must be at least 16, got {self.image_size}")
        if self.train < 1 or self.test < 1:
            raise BadInputError(f"train and test must be at least 1, got {self.train}, {self.test}")
        for name in ("hard", "label_flip"):
            if not 0 <= getattr(self, name) <= 1:
                raise BadInputError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.border < self.image_size // 4:
            raise BadInputError(f"border must be in [0, image_size / 4), got {self.border}")
        if self.noise < 0:
            raise BadInputError(f"noise must be >= 0, got {self.noise}")


@dataclass
class SegmentationData:
    train_images: torch.Tensor  # (N, 3, H, W) float
    train_labels: torch.Tensor  # (N, H, W) long, IGNORE on the border, flipped boundary pixels
    test_images: torch.Tensor
    test_labels: torch.Tensor  # clean, IGNORE on the border
    num_classes: int = len(CLASSES)
    ignore_index: int = IGNORE
    name: str = "shapes"


def _shape_mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float mask in {0, 1} of one shape of class ``kind`` at a random place and size."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = rng.uniform(0.12, 0.25) * size
    cy, cx = rng.uniform(r * 0.6, size - r * 0.6, 2)
    if kind == 1:  # disc
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    elif kind == 2:  # square (axis-aligned)
        mask = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    elif kind == 3:  # upright isosceles triangle
        top, bottom = cy - r, cy + r
        half = (yy - top) / (2 * r) * r * 1.1
        mask = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
    else:  # bar: a long thin rectangle, horizontal or vertical
        long, thin = r * 1.6, max(1.5, r * 0.3)
        dy, dx = (thin, long) if rng.random() < 0.5 else (long, thin)
        mask = (np.abs(yy - cy) <= dy) & (np.abs(xx - cx) <= dx)
    return mask.astype(np.float64)


def _scene(size: int, config: ShapesConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image (3, H, W) and its clean label map (H, W)."""
    background = rng.uniform(0.1, 0.9, 3)
    smooth = gaussian_filter(rng.normal(0, 1, (size, size)), sigma=size / 8)
    smooth = smooth / (np.abs(smooth).max() + 1e-8)
    image = background[:, None, None] + 0.12 * smooth[None] * rng.uniform(-1, 1, 3)[:, None, None]
    label = np.zeros((size, size), dtype=np.int64)
    for _ in range(rng.integers(1, 5)):
        kind = int(rng.integers(1, len(CLASSES)))
        alpha = _shape_mask(kind, size, rng)
        if alpha.sum() < 4:
            continue
        hard = rng.random() < config.hard
        way = int(rng.integers(3)) if hard else -1
        if way == 0:  # low contrast
            colour = np.clip(background + rng.choice([-1, 1], 3) * rng.uniform(0.04, 0.09, 3), 0, 1)
        else:
            colour = rng.uniform(0, 1, 3)
            while np.abs(colour - background).max() < 0.3:
                colour = rng.uniform(0, 1, 3)
        if way == 1:  # blur: a soft edge
            alpha = gaussian_filter(alpha, sigma=rng.uniform(1.0, 2.0))
        before_image, before_label = image.copy(), label.copy()
        stripes = 0.06 * np.sin(np.arange(size) * rng.uniform(0.5, 2.0) + rng.uniform(0, 6))
        fill = colour[:, None, None] + stripes[None, :, None]
        image = alpha[None] * fill + (1 - alpha[None]) * image
        label = np.where(alpha > 0.5, kind, label)
        if way == 2:  # occlusion: part of the shape covered by what was there before
            ys, xs = np.nonzero(alpha > 0.5)
            y0, x0 = int(rng.integers(ys.min(), ys.max() + 1)), int(rng.integers(xs.min(), xs.max() + 1))
            h, w = int(rng.integers(2, size // 4 + 1)), int(rng.integers(2, size // 4 + 1))
            sl = (slice(y0, y0 + h), slice(x0, x0 + w))
            image[(slice(None), *sl)] = before_image[(slice(None), *sl)]
            label[sl] = before_label[sl]
    image = image + rng.normal(0, config.noise, image.shape)
    return np.clip(image, 0, 1), label


def _flip_boundaries(label: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """``label`` with round(share * pixels) boundary pixels (at most half of the boundary band)
    set to the class of a differing 4-neighbour."""
    padded = np.pad(label, 1, mode="edge")
    neighbours = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
    differs = neighbours != label[None]
    band = np.flatnonzero(differs.any(0))
    count = min(int(round(share * label.size)), len(band) // 2)
    if count == 0:
        return label
    chosen = rng.choice(band, count, replace=False)
    out = label.copy().reshape(-1)
    flat_neighbours, flat_differs = neighbours.reshape(4, -1), differs.reshape(4, -1)
    for pixel in chosen:
        options = flat_neighbours[flat_differs[:, pixel], pixel]
        out[pixel] = options[rng.integers(len(options))]
    return out.reshape(label.shape)


def _split(n: int, config: ShapesConfig, rng: np.random.Generator, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    size = config.image_size
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        images[i], label = _scene(size, config, rng)
        if flip and config.label_flip > 0:
            label = _flip_boundaries(label, config.label_flip, rng)
        if config.border:
            b = config.border
            label[:b], label[-b:], label[:, :b], label[:, -b:] = IGNORE, IGNORE, IGNORE, IGNORE
        labels[i] = label
    return torch.from_numpy(images), torch.from_numpy(labels)


def make_shapes(config: ShapesConfig | None = None) -> SegmentationData:
    """The train split (noisy boundaries) and the clean test split, both from ``config.seed``."""
    config = config or ShapesConfig()
    train = _split(config.train, config, np.random.default_rng([config.seed, 0]), flip=True)
    test = _split(config.test, config, np.random.default_rng([config.seed, 1]), flip=False)
    return SegmentationData(*train, *test, name=f"shapes{config.image_size}")
