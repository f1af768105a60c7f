"""Image datasets for the vision methods, as in-memory tensors.

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, offline), split stratified by seed;
- torchvision datasets by name (``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``, ``svhn``),
  downloaded to ``root`` by torchvision (online users);
- plain tensors: :func:`from_tensors`.

Images are float tensors (N, C, H, W) in [0, 1]; labels are int64. ``image_size`` resizes
(bilinear), e.g. digits to 32x32 to time a CIFAR-sized epoch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from curate.core.errors import BadInputError



@dataclass
class DataFields:
    """The data fields every image experiment config starts with (its family's config inherits them)."""

    dataset: str = "digits"
    root: str | None = None  # where torchvision datasets are downloaded
    image_size: int | None = None
    seed: int = 0  # the train/test split

@dataclass
class ImageData:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    name: str = "tensors"

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])


def from_tensors(images, labels, test_images=None, test_labels=None, num_classes: int | None = None,
                 name: str = "tensors") -> ImageData:
    """Checked tensors: (N, C, H, W) or (N, H, W) images, one label per image; without a test set
    the training images serve as both."""
    def images_of(x, what: str) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
        if x.dim() == 3:
            x = x[:, None]
        if x.dim() != 4:
            raise BadInputError(f"{what} must be (N, C, H, W) or (N, H, W), got shape {tuple(x.shape)}")
        return x

    def labels_of(y, n: int, what: str) -> torch.Tensor:
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().reshape(-1)
        if len(y) != n:
            raise BadInputError(f"{what}: {len(y)} labels for {n} images")
        return y

    x = images_of(images, "images")
    y = labels_of(labels, len(x), "labels")
    tx = images_of(test_images, "test_images") if test_images is not None else x
    ty = labels_of(test_labels, len(tx), "test_labels") if test_labels is not None else y
    if test_images is not None and test_labels is None:
        raise BadInputError("test_images were given without test_labels")
    classes = num_classes or int(max(y.max(), ty.max())) + 1
    if y.min() < 0 or max(y.max(), ty.max()) >= classes:
        raise BadInputError(f"labels must lie in [0, {classes}), got {int(y.min())}..{int(max(y.max(), ty.max()))}")
    return ImageData(x, y, tx, ty, classes, name)


def _digits(root: str | None, seed: int, test_fraction: float) -> ImageData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(images, digits.target, test_size=test_fraction,
                                                        random_state=seed, stratify=digits.target)
    return from_tensors(x_train, y_train, x_test, y_test, 10, "digits")


def _torchvision(name: str) -> Callable[[str | None, int, float], ImageData]:
    def load(root: str | None, seed: int, test_fraction: float) -> ImageData:
        try:
            from torchvision import datasets
        except ImportError as err:
            raise BadInputError(f"dataset '{name}' needs torchvision: pip install 'curatekit[vision]'") from err
        cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "mnist": datasets.MNIST,
               "fashion_mnist": datasets.FashionMNIST, "svhn": datasets.SVHN}[name]
        root = root or "data"
        if name == "svhn":
            train, test = cls(root, split="train", download=True), cls(root, split="test", download=True)
            tensors = [(torch.as_tensor(d.data).float() / 255, torch.as_tensor(d.labels)) for d in (train, test)]
        else:
            train, test = cls(root, train=True, download=True), cls(root, train=False, download=True)

            def to_tensor(d):
                x = torch.as_tensor(np.asarray(d.data)).float() / 255
                return (x.permute(0, 3, 1, 2) if x.dim() == 4 else x), torch.as_tensor(np.asarray(d.targets))
            tensors = [to_tensor(train), to_tensor(test)]
        return from_tensors(tensors[0][0], tensors[0][1], tensors[1][0], tensors[1][1], name=name)

    return load


DATASETS: dict[str, Callable[[str | None, int, float], ImageData]] = {
    "digits": _digits, **{n: _torchvision(n) for n in ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")}}


def load_images(name: str, root: str | None = None, seed: int = 0, test_fraction: float = 0.2,
                image_size: int | None = None) -> ImageData:
    """A dataset by name (see the module docstring)."""
    if name not in DATASETS:
        raise BadInputError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    if not 0 < test_fraction < 1:
        raise BadInputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    data = DATASETS[name](root, seed, test_fraction)
    if image_size and image_size != data.image_size:
        resize = lambda x: torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",  # noqa: E731
                                                           align_corners=False)
        data.train_images, data.test_images = resize(data.train_images), resize(data.test_images)
    return data
