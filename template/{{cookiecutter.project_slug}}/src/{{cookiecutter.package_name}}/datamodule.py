"""The LightningDataModule: one class for every dataset, with train-only augmentation."""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning import LightningDataModule
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from . import datasets


class TransformedDataset(Dataset):
    """Applies a transform to the image of each `(image, label)` pair."""

    def __init__(self, dataset: Dataset, transform: nn.Module) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


class ImageDataModule(LightningDataModule):
    """Image classification data: `digits` (embedded), `mnist`, `fashion_mnist`, `cifar10`,
    `cifar100` (torchvision) and `imagefolder` (class sub-folders).

    Args:
        dataset: which dataset.
        root: where torchvision datasets live / the image folder.
        image_size: side of the square images the model sees (a power of 2 keeps the pooling exact).
        batch_size: per-device batch size.
        num_workers: DataLoader worker processes (0 is fastest for the in-memory digits).
        val_fraction, test_fraction: parts carved out when a dataset has no such split.
        split_seed: seed of those splits, independent of the training seed.
        download: fetch torchvision datasets when missing (needs the network).
        augment: training-only transforms (torchvision v2 modules or ours), applied in order
            before normalization; validation, test and predict see none.

    Example:
        >>> dm = ImageDataModule("digits")
        >>> dm.setup("fit")
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> tuple(images.shape)
        (64, 1, 32, 32)
    """

    def __init__(
        self,
        dataset: str = "digits",
        root: str = "data",
        image_size: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        download: bool = True,
        augment: list[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if dataset not in datasets.DATASETS:
            raise ValueError(f"data.dataset={dataset!r} is unknown: choose one of {', '.join(datasets.DATASETS)}.")
        if image_size < 1:
            raise ValueError(f"data.image_size={image_size}: use a positive size such as 32.")
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size}: use a positive batch size such as 64.")
        if num_workers < 0:
            raise ValueError(f"data.num_workers={num_workers}: use 0 or more.")
        for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < fraction < 0.5:
                raise ValueError(f"data.{name}={fraction}: use a fraction in (0, 0.5), e.g. 0.15.")
        self.dataset, self.root = dataset, Path(root)
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.download = download
        self.augment = list(augment or [])
        if dataset == "imagefolder":
            self.classes = datasets.image_folder_classes(self.root)  # fails now, not mid-fit
        else:
            self.classes = [str(i) for i in range(datasets.NUM_CLASSES[dataset])]
        self.splits: datasets.Splits | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_channels(self) -> int:
        return datasets.NUM_CHANNELS[self.dataset]

    def prepare_data(self) -> None:
        if self.dataset in datasets.TORCHVISION_CLASSES and self.download:
            datasets.download_torchvision(self.dataset, self.root)

    def _base_transform(self) -> list[nn.Module]:
        if self.dataset == "digits":  # already float tensors at image_size
            return []
        return [v2.ToImage(), v2.Resize((self.image_size, self.image_size), antialias=True), v2.ToDtype(torch.float32, scale=True)]

    def _normalize(self) -> nn.Module:
        if self.dataset == "digits":
            train_images = torch.stack([self.splits.train[i][0] for i in range(len(self.splits.train))])
            mean, std = (train_images.mean().item(),), (train_images.std().item(),)
        else:
            mean, std = datasets.STATS[self.dataset]
        return v2.Normalize(mean, std)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        if self.dataset == "digits":
            self.splits = datasets.load_digits(self.image_size, self.val_fraction, self.test_fraction, self.split_seed)
        elif self.dataset == "imagefolder":
            self.splits = datasets.load_image_folder(self.root, self.val_fraction, self.test_fraction, self.split_seed)
        else:
            self.splits = datasets.load_torchvision(self.dataset, self.root, self.val_fraction, self.split_seed)
        base, normalize = self._base_transform(), self._normalize()
        self.train_transform = v2.Compose([*base, *self.augment, normalize])
        self.eval_transform = v2.Compose([*base, normalize])

    def _loader(self, dataset: Dataset, transform: nn.Module, shuffle: bool) -> DataLoader:
        return DataLoader(
            TransformedDataset(dataset, transform),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits.train, self.train_transform, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, self.eval_transform, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, self.eval_transform, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, self.eval_transform, shuffle=False)
