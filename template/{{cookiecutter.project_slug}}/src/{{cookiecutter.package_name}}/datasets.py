"""Datasets: embedded digits, torchvision's MNIST/Fashion-MNIST/CIFAR, image folders, synthetic shapes.

`DATASETS` holds one `DatasetSpec` per `data.dataset` name: its loader, class count, channels,
published statistics, A7 rules, torchvision class and whether samples carry masks. Each loader
returns a `Splits` of datasets yielding `(image, label)` (or `(image, mask, label)`) with images as
uint8 or float tensors/PIL images; the DataModule adds the transforms. No loader touches the
network unless the user asked for a download. Carved splits are stratified by class (`carve`), with
the labels read apart from the images (`labels_of`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset
from torchvision.datasets import ImageFolder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# A7: transforms that change what an image of a dataset shows (see transforms/identity_check.py).
DIGIT_RULES = {
    "horizontal_flip": "a mirrored 2, 3, 4, 5, 7 or 9 is no digit",
    "vertical_flip": "an upside-down 6 reads as a 9 and a mirrored 2 or 5 as no digit",
    "max_rotation": (30.0, "a 6 turned far enough is a 9, a 7 an L"),
}


class DataNotFoundError(FileNotFoundError):
    """Raised with a message naming the folder and the option that fixes it."""


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    classes: list[str]


@dataclass(frozen=True)
class LoadOptions:
    """What a dataset's loader may need (each takes what it uses)."""

    name: str
    root: Path
    image_size: int
    val_fraction: float
    test_fraction: float
    seed: int
    masks: bool = False
    skip: frozenset[Path] = frozenset()


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the project knows about one dataset, in one place (the `DATASETS` registry).

    Args:
        name: the `data.dataset` value.
        loader: `loader(LoadOptions) -> Splits`.
        num_classes: the class count, or None when the classes are the folder's sub-folders (imagefolder).
        channels: image channels as the model sees them.
        stats: the published per-channel (mean, std) of the training split, or None (measured instead).
        identity_changing: A7 rules: the transforms that change what an image shows (see
            transforms/identity_check.py), e.g. flips on digits.
        torchvision_class: the torchvision.datasets class name, for download and the layout on disk.
        has_masks: every sample carries a segmentation mask (A6); an image folder has them with data.masks=true.
        at_image_size: the loader yields float tensors at data.image_size already (no decode/resize/cast).
    """

    name: str
    loader: Callable[[LoadOptions], Splits]
    num_classes: int | None
    channels: int
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    identity_changing: Mapping = field(default_factory=dict)
    torchvision_class: str | None = None
    has_masks: bool = False
    at_image_size: bool = False

    @property
    def from_folder(self) -> bool:
        """The classes (and images) come from a folder given by data.root."""
        return self.num_classes is None


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The class index of every sample of `dataset`, as a long tensor, without loading one image.

    Reads the labels the datasets keep beside their images: `targets` (torchvision's datasets,
    `ImageFolder`, ours), the last tensor of a `TensorDataset`; a `Subset` or `ConcatDataset` maps
    those of the datasets under it. Anything else is refused, naming its type.

    Example:
        >>> labels_of(Subset(TensorDataset(torch.zeros(3, 2), torch.tensor([2, 0, 1])), [2, 0])).tolist()
        [1, 2]
    """
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, ConcatDataset):
        return torch.cat([labels_of(part) for part in dataset.datasets])
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[-1].long()
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(
            f"labels_of: {type(dataset).__name__} keeps no labels apart from its images: give it a `targets` "
            "attribute (one class index per sample), as torchvision's datasets have."
        )
    return torch.as_tensor(targets, dtype=torch.long)


def carve(dataset: Dataset, fractions: tuple[float, ...], seed: int) -> list[Subset]:
    """Split off one part per fraction (`round(fraction * len)` samples each), stratified by class:
    `[rest, part_1, part_2, ...]`. The same seed gives the same split on every machine and rank.

    scikit-learn's `train_test_split(stratify=...)` (its own seeded RNG, never the global one) cuts
    the parts one after the other, each from what the earlier ones left: the first part holds each
    class within one sample of its exact share, a later one within `1 + size / len(rest)`. Data too
    small to stratify (a class of one sample, a part smaller than the class count) is split at random,
    with a warning.
    """
    from sklearn.model_selection import train_test_split

    labels = labels_of(dataset).numpy()
    rest = np.arange(len(dataset))
    parts = []
    for fraction in fractions:
        size = int(round(fraction * len(dataset)))
        try:
            rest, part = train_test_split(rest, test_size=size, stratify=labels[rest], random_state=seed)
        except ValueError as error:  # sklearn: a class too small for the split, or the split smaller than the classes
            warnings.warn(
                f"Cannot stratify a part of {size} of {len(rest)} samples by class ({error}); split at random "
                "instead. Stratified splits need at least 2 samples per class and a part of at least one per class.",
                stacklevel=2,
            )
            rest, part = train_test_split(rest, test_size=size, random_state=seed)
        parts.append(part)
    return [Subset(dataset, indices.tolist()) for indices in (rest, *parts)]


# ----------------------------------------------------------------------------- imbalanced data
CLASS_WEIGHTS = ("none", "auto")
SAMPLERS = ("shuffle", "balanced")


def check_class_weights(value: str | list[float], classes: list[str]) -> None:
    """`data.class_weights` is `none`, `auto` or one positive number per class, else one message with the fix."""
    fix = f"use none, auto, or one positive weight per class in class order ({len(classes)} numbers)"
    if isinstance(value, str):
        if value not in CLASS_WEIGHTS:
            raise ValueError(f"data.class_weights={value!r}: {fix}.")
        return
    weights = list(value)
    if len(weights) != len(classes):
        raise ValueError(f"data.class_weights has {len(weights)} weight(s) for {len(classes)} classes "
                         f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}): {fix}.")
    bad = [(name, w) for name, w in zip(classes, weights, strict=True)
           if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < float("inf")]
    if bad:
        raise ValueError(f"data.class_weights: class {bad[0][0]!r} has weight {bad[0][1]!r}: {fix}.")


def inverse_frequency_weights(labels: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """One loss weight per class, proportional to 1 / (its count in `labels`), scaled to mean 1 (so
    the loss keeps its scale, and with it the learning rate, when the classes are balanced)."""
    counts = torch.bincount(labels, minlength=len(classes)).double()
    if (counts == 0).any():
        missing = classes[int((counts == 0).nonzero()[0])]
        raise ValueError(
            f"data.class_weights=auto: class {missing!r} has no sample in the training split, so its inverse "
            "frequency is infinite. Add samples of it, or give the weights as a list (one per class)."
        )
    weights = 1.0 / counts
    return (weights * len(classes) / weights.sum()).float()


def balanced_sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights 1 / (count of its class): a sampler drawing by them draws every class equally often."""
    return 1.0 / torch.bincount(labels)[labels].double()


def load_digits(image_size: int, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """scikit-learn's 1,797 real 8x8 digits, upscaled to `image_size` (bundled: no download)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train, val, test = carve(TensorDataset(images.clamp(0, 1), labels), (val_fraction, test_fraction), seed)
    return Splits(train, val, test, [str(i) for i in range(10)])


class SyntheticMaskedShapes(Dataset):
    """A6's test data: a bright disc (class 0) or square (class 1) on a striped, noisy background.

    Samples are `(tv_tensors.Image (1, H, W) float in [0, 1], tv_tensors.Mask (H, W) uint8, label)`;
    the background never reaches 0, so a refill with zeros or a flat colour is easy to spot.

    Example:
        >>> image, mask, label = SyntheticMaskedShapes(4, size=32)[0]
        >>> tuple(image.shape), tuple(mask.shape), label in (0, 1)
        ((1, 32, 32), (32, 32), True)
    """

    def __init__(self, n: int = 600, size: int = 32, seed: int = 0) -> None:
        from torchvision import tv_tensors

        if n < 1 or size < 16:
            raise ValueError(f"SyntheticMaskedShapes(n={n}, size={size}): use n >= 1 and size >= 16.")
        g = torch.Generator().manual_seed(seed)
        ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
        self.images, self.masks, self.labels = [], [], []
        for _ in range(n):
            fx, fy, phase = (torch.rand(3, generator=g) * torch.tensor([0.25, 0.25, 6.28])).tolist()
            background = 0.35 + 0.12 * torch.sin(6.28 * (fx * xs + fy * ys) / 4 + phase) + 0.04 * torch.randn(size, size, generator=g)
            label = int(torch.randint(2, (), generator=g))
            half = float(torch.empty(()).uniform_(size / 10, size / 6, generator=g))
            cy, cx = (torch.rand(2, generator=g) * (size - 4 * half) + 2 * half).tolist()
            if label == 0:
                mask = (ys - cy) ** 2 + (xs - cx) ** 2 <= half**2
            else:
                mask = ((ys - cy).abs() <= half) & ((xs - cx).abs() <= half)
            image = torch.where(mask, 0.85 + 0.04 * torch.randn(size, size, generator=g), background).clamp(0.05, 1.0)
            self.images.append(tv_tensors.Image(image[None]))
            self.masks.append(tv_tensors.Mask(mask.to(torch.uint8)))
            self.labels.append(label)

    @property
    def targets(self) -> list[int]:
        """The labels, as torchvision's datasets name them (read by `labels_of`)."""
        return self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.masks[index], self.labels[index]


def load_shapes(image_size: int, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """The synthetic masked dataset (600 images), split like digits."""
    train, val, test = carve(SyntheticMaskedShapes(600, image_size, seed=1234), (val_fraction, test_fraction), seed)
    return Splits(train, val, test, ["disc", "square"])


def missing_data_message(name: str, root: Path, cause: object, downloading: bool) -> str:
    layout = f"the layout torchvision.datasets.{DATASETS[name].torchvision_class} expects"
    if downloading:
        return (
            f"{name} is not in {root.resolve()} and could not be downloaded ({cause}). Retry when online, "
            f"put the dataset files there ({layout}), or point data.root at the folder that holds them."
        )
    return (
        f"{name} is not in {root.resolve()} ({cause}). Put the dataset files there ({layout}), point "
        "data.root at the folder that holds them, or set data.download=true to fetch them when online."
    )


def download_torchvision(name: str, root: Path) -> None:
    """Fetch a torchvision dataset into `root` (users only; tests write the files themselves)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[name].torchvision_class)
    for train in (True, False):
        try:
            cls(str(root), train=train, download=True)
        except Exception as error:  # URLError, HTTPError, checksum errors...
            raise DataNotFoundError(missing_data_message(name, root, error, downloading=True)) from error


def check_torchvision_folder(name: str, root: Path) -> None:
    """Without download, the dataset's folder must exist now, not when training starts."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[name].torchvision_class)
    folder = root / cls.base_folder if hasattr(cls, "base_folder") else root / cls.__name__ / "raw"
    if not folder.is_dir():
        raise DataNotFoundError(missing_data_message(name, root, f"no folder {folder}", downloading=False))


PRE_RESIZE_BYTES = 2**30  # InMemoryImages resizes the whole array once when the result stays below this


class InMemoryImages(Dataset):
    """A torchvision MNIST/Fashion-MNIST/CIFAR dataset served from the uint8 array it already holds.

    torchvision reads the files into `.data` ((N, H, W) for the MNIST family, (N, H, W, C) for CIFAR)
    and `.targets`, then builds a PIL image per sample in `__getitem__`, which the transforms turn
    straight back into a tensor and resize. This serves the same pixels as `tv_tensors.Image` uint8
    (C, H, W), resized once for the whole array to `image_size` (the same antialiased bilinear resize
    as `v2.Resize`, which then has nothing left to do) when the result fits in `PRE_RESIZE_BYTES`
    (else per sample, as before). The DataModule's `ToImage/Resize/ToDtype` pipeline runs unchanged
    and gives identical tensors, without a PIL image or a resize per sample. Samples are
    `(image, int label)`, as torchvision's.
    """

    def __init__(self, source: Dataset, image_size: int | None = None) -> None:
        from torchvision.transforms.v2 import functional as TF

        images = torch.as_tensor(source.data)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
        n, channels = images.shape[:2]
        if image_size and images.shape[-2:] != (image_size, image_size) and n * channels * image_size**2 <= PRE_RESIZE_BYTES:
            images = torch.cat([TF.resize(part, [image_size, image_size], antialias=True) for part in images.split(4096)])
        self.images = images
        self.targets = torch.as_tensor(source.targets, dtype=torch.long)
        self.classes = list(source.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from torchvision import tv_tensors

        return tv_tensors.Image(self.images[index]), int(self.targets[index])


def load_torchvision(name: str, root: Path, val_fraction: float, seed: int, image_size: int | None = None) -> Splits:
    """torchvision's own reader for the files; samples served from memory (`InMemoryImages`)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[name].torchvision_class)
    try:
        train_full = InMemoryImages(cls(str(root), train=True, download=False), image_size)
        test = InMemoryImages(cls(str(root), train=False, download=False), image_size)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DataNotFoundError(missing_data_message(name, root, error, downloading=False)) from error
    train, val = carve(train_full, (val_fraction,), seed)
    return Splits(train, val, test, list(train_full.classes))


CORRUPT_IMAGES = ("skip", "error")


def unreadable_images(root: Path) -> tuple[list[Path], int]:
    """(image files under `root` that PIL cannot open, number of image files checked).

    Each file's header is parsed and `verify()`ed (PNG chunk checksums; no pixel data is decoded, so
    about 0.1 ms per file): a zero-byte, truncated-header or mislabelled file is found here, before
    any run starts, instead of as a PIL error in a DataLoader worker hours into training.
    """
    from PIL import Image

    bad, checked = [], 0
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        checked += 1
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for broken files
            bad.append(path)
    return bad, checked


def check_images(root: Path, corrupt_images: str) -> frozenset[Path]:
    """The unreadable images under `root` to leave out (`skip`, with one warning that counts them),
    or a DataNotFoundError naming them (`error`). Paths as found under `root`: the loaders build theirs
    the same way, so membership is a plain comparison (no per-file `resolve`)."""
    bad, checked = unreadable_images(root)
    if not bad:
        return frozenset()
    listing = ", ".join(str(p) for p in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    if corrupt_images == "error":
        raise DataNotFoundError(
            f"{len(bad)} of {checked} image files under {root.resolve()} cannot be read: {listing}. Delete or replace "
            "them, or set data.corrupt_images=skip to train without them."
        )
    warnings.warn(
        f"Skipping {len(bad)} of {checked} image files under {root.resolve()} that cannot be read: {listing}. "
        "Delete or replace them (data.corrupt_images=error stops instead).", stacklevel=2,
    )
    return frozenset(bad)


def load_rgb(path: str):
    """torchvision's PIL loader, with the file named when its pixel data cannot be decoded (a file
    truncated after its header passes the check at start and fails only here)."""
    from PIL import Image

    try:
        with open(path, "rb") as file, Image.open(file) as image:
            return image.convert("RGB")
    except Exception as error:  # PIL's decoders raise OSError, SyntaxError, ValueError...
        raise OSError(
            f"{path}: cannot decode this image ({error}). Delete or replace the file, then resume with --ckpt_path last."
        ) from error


def check_classes_have_images(root: Path, classes: list[str], skip: frozenset[Path] = frozenset()) -> None:
    """Every class folder of every split holds at least one usable image (checked when the
    DataModule is built, so the message comes before any run folder or W&B run exists)."""
    train_root = image_folder_root(root)
    folders = [train_root] + [root / s for s in ("val", "test") if (root / s).is_dir()]
    for folder in folders:
        empty = [c for c in classes if not any(
            p.suffix.lower() in IMAGE_SUFFIXES and p not in skip for p in (folder / c).iterdir())]
        if empty:
            raise DataNotFoundError(
                f"{folder.resolve()} has no usable images in class folder(s) {', '.join(empty)}. Each class needs a "
                f"sub-folder with at least one image ({', '.join(sorted(IMAGE_SUFFIXES))}); remove empty class folders or add images."
            )


def image_folder_root(root: Path) -> Path:
    """`root/train` when it exists (with optional `root/val`, `root/test`), else `root` itself."""
    if not root.is_dir():
        raise DataNotFoundError(
            f"data.root={str(root)!r}: folder {root.resolve()} does not exist. Point data.root at a folder of "
            "class sub-folders (or with train/, val/ and test/ folders of class sub-folders)."
        )
    return root / "train" if (root / "train").is_dir() else root


def image_folder_classes(root: Path) -> list[str]:
    train_root = image_folder_root(root)
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir() and p.name not in {"val", "test", "masks"})
    if len(classes) < 2:
        raise DataNotFoundError(
            f"{train_root.resolve()} has {len(classes)} class folder(s): an image folder needs one sub-folder "
            "per class and at least 2 classes."
        )
    for split in ("val", "test"):  # checked now, before any run starts, not when the splits load
        folder = root / split
        if folder.is_dir():  # load_image_folder reads root/val and root/test whenever they exist
            split_classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "masks")
            if split_classes != classes:
                raise DataNotFoundError(
                    f"{folder.resolve()} has classes {split_classes} but train has {classes}: "
                    "give every split the same class folders."
                )
    return classes


class ImageFolderDataset(ImageFolder):
    """Class sub-folders of images, `<folder>/<class>/<name>.<ext>` (nested folders too), labelled by
    the position of their class in `classes`; files in `skip` (see `check_images`) are left out.

    Samples are `(PIL RGB image, label)`. With `masks`, each image also has a mask at
    `<folder>/masks/<class>/<name>.<any image ext>` (non-zero pixels are the object), and samples are
    `(tv_tensors.Image uint8, tv_tensors.Mask (H, W) uint8, label)` so the mask follows the transforms.
    """

    def __init__(self, folder: Path, classes: list[str], skip: frozenset[Path] = frozenset(), masks: bool = False) -> None:
        self.folder, self.masks, self._class_list = Path(folder), masks, list(classes)

        def usable(file: str) -> bool:
            return Path(file).suffix.lower() in IMAGE_SUFFIXES and Path(file) not in skip

        try:
            super().__init__(str(folder), loader=load_rgb, is_valid_file=usable)
        except FileNotFoundError as error:
            raise DataNotFoundError(
                f"{self.folder.resolve()} has no usable images ({error}). Each class needs a sub-folder with at least one "
                f"image ({', '.join(sorted(IMAGE_SUFFIXES))}); remove empty class folders or add images."
            ) from error
        self.folder = Path(self.root)  # as ImageFolder walked it (~ expanded)
        self.mask_files: list[Path] = []
        if masks:
            found = {Path(path): self._mask_file(Path(path)) for path, _ in self.samples}
            missing = [image for image, mask in found.items() if mask is None]
            if missing:
                raise DataNotFoundError(
                    f"{len(missing)} image(s) in {self.folder.resolve()} have no mask, e.g. {missing[0]}: put one at "
                    f"{(self.folder / 'masks' / missing[0].relative_to(self.folder)).resolve()} (any image format), "
                    "or set data.masks=false."
                )
            self.mask_files = list(found.values())

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """The given classes (the `masks` folder, or val/ and test/ beside them, are no class)."""
        return self._class_list, {name: index for index, name in enumerate(self._class_list)}

    def _mask_file(self, image: Path) -> Path | None:
        folder = (self.folder / "masks" / image.relative_to(self.folder)).parent
        masks = sorted(m for m in folder.glob(image.stem + ".*") if m.suffix.lower() in IMAGE_SUFFIXES)
        return masks[0] if masks else None

    def __getitem__(self, index: int):
        if not self.masks:
            return super().__getitem__(index)
        from PIL import Image
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        path, label = self.samples[index]
        with Image.open(self.mask_files[index]) as mask:
            object_mask = (TF.pil_to_tensor(mask.convert("L"))[0] > 0).to(torch.uint8)
        return tv_tensors.Image(TF.pil_to_tensor(self.loader(path))), tv_tensors.Mask(object_mask), label


def load_image_folder(root: Path, val_fraction: float, test_fraction: float, seed: int,
                      skip: frozenset[Path] = frozenset(), masks: bool = False) -> Splits:
    """Class sub-folders; a val (and test) split is carved from train when its folder is missing.
    Files in `skip` (see `check_images`) are left out; with `masks`, each split has a `masks/`
    folder beside its class folders (see `ImageFolderDataset`)."""
    classes = image_folder_classes(root)

    def folder(path: Path) -> ImageFolderDataset:
        return ImageFolderDataset(path, classes, skip, masks)

    train_full = folder(image_folder_root(root))
    has_val, has_test = (root / "val").is_dir(), (root / "test").is_dir()
    carve_fractions = tuple(f for f, present in ((val_fraction, has_val), (test_fraction, has_test)) if not present)
    parts = carve(train_full, carve_fractions, seed) if carve_fractions else [train_full]
    train = parts.pop(0)
    val = folder(root / "val") if has_val else parts.pop(0)
    test = folder(root / "test") if has_test else parts.pop(0)
    return Splits(train, val, test, classes)


# ----------------------------------------------------------------------------- the registry
# Named functions, not lambdas: a DataModule (and its spec) may be pickled (DDP spawn, workers).
def _load_digits(options: LoadOptions) -> Splits:
    return load_digits(options.image_size, options.val_fraction, options.test_fraction, options.seed)


def _load_shapes(options: LoadOptions) -> Splits:
    return load_shapes(options.image_size, options.val_fraction, options.test_fraction, options.seed)


def _load_torchvision(options: LoadOptions) -> Splits:
    return load_torchvision(options.name, options.root, options.val_fraction, options.seed, options.image_size)


def _load_image_folder(options: LoadOptions) -> Splits:
    return load_image_folder(options.root, options.val_fraction, options.test_fraction, options.seed, options.skip,
                             options.masks)


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("digits", _load_digits, num_classes=10, channels=1, identity_changing=DIGIT_RULES,
                at_image_size=True),  # no published stats: measured on its training split
    DatasetSpec("mnist", _load_torchvision, num_classes=10, channels=1, stats=((0.1307,), (0.3081,)),
                identity_changing=DIGIT_RULES, torchvision_class="MNIST"),
    DatasetSpec("fashion_mnist", _load_torchvision, num_classes=10, channels=1, stats=((0.2860,), (0.3530,)),
                identity_changing={},  # A7: none — a mirrored, upside-down or turned garment is the same garment
                torchvision_class="FashionMNIST"),
    DatasetSpec("cifar10", _load_torchvision, num_classes=10, channels=3,
                stats=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), torchvision_class="CIFAR10"),
    DatasetSpec("cifar100", _load_torchvision, num_classes=100, channels=3,
                stats=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)), torchvision_class="CIFAR100"),
    DatasetSpec("imagefolder", _load_image_folder, num_classes=None, channels=3,
                stats=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),  # ImageNet's
    DatasetSpec("shapes", _load_shapes, num_classes=2, channels=1, has_masks=True, at_image_size=True),
)}
