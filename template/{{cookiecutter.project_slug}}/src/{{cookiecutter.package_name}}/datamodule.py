"""The LightningDataModule: one class for every dataset, with train-only augmentation (A1–A8)
and pre-processing statistics measured on the training split (P1–P4)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from . import datasets
from . import transforms as _transforms  # noqa: F401  (so configs can name our transforms by short name)
from .folds import check_folds, k_fold_splits
from .prediction import ImageFiles, find_images
from .transforms.batch_mix import mix_batch
from .transforms.batched import BatchedAugment, UnsupportedTransformError
from .transforms.identity_check import identity_changing
from .transforms.preprocessing import (
    NEEDS_COVARIANCE,
    PREPROCESS,
    Preprocess,
    batches_of,
    fit_preprocessing,
    measure,
    preprocess_batch,
)


class TransformedDataset(Dataset):
    """Applies a transform to the image of each `(image, label)` pair; for `(image, mask, label)`
    samples the transform sees the (image, mask) pair, so the mask follows, and the mask is dropped."""

    def __init__(self, dataset: Dataset, transform: nn.Module) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample = self.dataset[index]
        if len(sample) == 3:
            image, _mask = self.transform(sample[0], sample[1])
            return image, sample[2]
        image, label = sample
        return self.transform(image), label


class DeviceBatches:
    """Training batches served from ONE tensor on the training device and augmented there, per batch
    (`data.device_augment`, see transforms/batched.py). Shuffled every epoch from a seed drawn from
    the global RNG (so `seed_everything` repeats runs); each rank takes its share, padded to equal
    length as DistributedSampler does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, augment, finish,
                 rank: int = 0, world_size: int = 1, sample_weights: torch.Tensor | None = None) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.augment, self.finish, self.rank, self.world_size = augment, finish, rank, world_size
        self.sample_weights = sample_weights  # data.sampler=balanced: drawn with replacement by these

    def _per_rank(self) -> int:
        return math.ceil(len(self.labels) / self.world_size)

    def __len__(self) -> int:
        return math.ceil(self._per_rank() / self.batch_size)

    def __iter__(self):
        device = self.images.device
        generator = torch.Generator(device=device).manual_seed(int(torch.randint(2**62, ())))
        if self.sample_weights is None:
            order = torch.randperm(len(self.labels), generator=generator, device=device)
        else:
            order = torch.multinomial(self.sample_weights, len(self.labels), replacement=True, generator=generator)
        order = torch.cat([order, order[: self._per_rank() * self.world_size - len(order)]])[self.rank :: self.world_size]
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            with _one_cpu_thread(device.type == "cpu"):
                images = self.images[index]
                images = images.float() / 255 if images.dtype == torch.uint8 else images.float()  # = v2.ToDtype(scale=True)
                batch = self.finish(self.augment(images, generator)), self.labels[index]
            yield batch


@contextmanager
def _one_cpu_thread(enabled: bool):
    """Batch-sized augmentation ops are too small for intra-op threads: on a busy 2-core machine the
    thread hand-offs cost 5-10x (benchmarks/data_path.py). The model's step keeps all threads."""
    if not enabled:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def choose_device_augment(spec: datasets.DatasetSpec, augment: list[nn.Module]) -> tuple[bool, str]:
    """`data.device_augment: auto`: whether a dataset and its `augment` list take the batched path, and why.

    Yes for the datasets torchvision keeps in memory (MNIST, Fashion-MNIST, CIFAR: one uint8 tensor, at
    most 150 MB) when every transform has a batched counterpart: a per-sample transform, cast and
    normalize cost more per image than the whole batched gather (full Fashion-MNIST, the default net, 2 CPU
    cores: 9 ms of each 150 ms training step of 64 images; `benchmarks/bench.py --only fashion`). No for
    image folders (decoded per file, any size) and for a transform without a batched form (it runs as
    written, per sample, instead of failing).

    Example:
        >>> choose_device_augment(datasets.DATASETS["fashion_mnist"], [])[0]
        True
    """
    if spec.from_folder:
        return False, "image folders are decoded per sample"
    if spec.torchvision_class is None:
        return False, f"{spec.name} is not one of torchvision's in-memory datasets"
    for transform in augment:
        try:
            BatchedAugment([transform])
        except UnsupportedTransformError:
            return False, f"{type(transform).__name__} has no batched counterpart"
    return True, f"{spec.name} is held in memory as one tensor"


class ImageDataModule(LightningDataModule):
    """Image classification data: `digits` (embedded), `mnist`, `fashion_mnist`, `cifar10`,
    `cifar100` (torchvision), `imagefolder` (class sub-folders) and `shapes` (synthetic, with masks);
    each described by its `DatasetSpec` in `datasets.DATASETS`.

    Pre-processing (P1–P4, formulas in transforms/preprocessing.py): the statistics are measured
    once on the training split without augmentation (at the first dataloader), kept in
    `preprocess_state`, saved in every checkpoint and restored from it, so a new process
    normalizes exactly as training did.

    Args:
        dataset: which dataset.
        root: where torchvision datasets live / the image folder.
        image_size: side of the square images the model sees (a power of 2 keeps the pooling exact).
        batch_size: per-device batch size.
        num_workers: DataLoader worker processes (0 is fastest for the in-memory digits).
        val_fraction, test_fraction: parts carved out when a dataset has no such split.
        split_seed: seed of those splits, independent of the training seed.
        num_folds, fold: k-fold cross-validation (E2): with num_folds > 1, fold `fold` of the pooled
            train+val data validates and the other folds train; the test split is unchanged.
        train_fraction: train on a stratified subset of this size of the training split (the data-scarce
            regime, learning curves); validation and test stay whole. Drawn with `split_seed`, so every
            training seed sees the same subset.
        download: fetch torchvision datasets when missing (needs the network).
        corrupt_images: what to do with image-folder files PIL cannot open, found by a header check
            of every file when the DataModule is built (before any run starts): `skip` leaves them
            out with one warning that counts and names them; `error` stops with that list.
        augment: training-only transforms (torchvision v2 modules or ours), applied in order
            before normalization; validation, test and predict see none.
        batch_augment: training-only batch mixers (`torchvision.transforms.v2.MixUp` / `CutMix`,
            A8), one picked per batch after it reaches the device; targets become probabilities.
        masks: image folder with a `masks/` folder (A6): samples carry a mask that `augment`
            transforms move along with the image (`shapes` always has masks).
        allow_identity_changing: run even if `augment` holds a transform the dataset declares
            identity-changing (A7, e.g. flips on digits); otherwise that fails at start.
        preprocess: `published` (the dataset's published mean/std, measured when it has none; with
            a pretrained timm backbone, the mean/std its weights were trained with),
            `center` (P1), `standardize` (P1+P2), `minmax` (P3), `zca` / `pca` (P4), `none`;
            measured on the training split and saved in checkpoints.
        whiten_eps: added to the covariance eigenvalues before whitening (P4).
        device_augment: keep the training split as one tensor (uint8 for torchvision datasets) on the
            training device and apply `augment` per batch there with batched ops (GPU when present);
            same distribution as the per-sample path, several times faster for small data. Every
            `augment` transform needs a batched counterpart (transforms/batched.py); not for imagefolder.
            `auto` (the generated config's choice for MNIST, Fashion-MNIST and CIFAR): on for torchvision's
            in-memory datasets when every transform has a batched counterpart, else off with one line
            naming the transform (`choose_device_augment`).
        predict_root: `predict` labels these images instead of the test split: a folder (searched
            recursively) or a text file listing image paths, one per line (relative ones from the
            file's folder). Checked when the DataModule is built: no images is an error, unreadable
            files follow `corrupt_images`. The CLI then writes `predictions.csv` (prediction.py).
        predict_top_k: classes per image in `predictions.csv`, most likely first (capped at the class count).
        class_weights: imbalanced classes: the weight of each class in the training cross-entropy.
            `none`; `auto` (inverse class frequency in the training split, scaled to mean 1); or one
            positive number per class, in class order. Read by the model at the start of fit;
            validation/test losses stay unweighted. Works with label smoothing and MixUp/CutMix.
        sampler: order of the training samples: `shuffle` (each sample once per epoch) or `balanced`
            (`WeightedRandomSampler`: an epoch of as many draws, with replacement, each class equally
            likely; seeded from the global RNG, so `seed_everything` repeats it; under DDP rank 0's
            seed is broadcast and Lightning's DistributedSamplerWrapper gives each rank its share of
            the same draw). Also with `device_augment`. With class_weights=auto it would correct the
            imbalance twice, and is refused.

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
        num_folds: int = 1,
        fold: int = 0,
        train_fraction: float = 1.0,
        download: bool = True,
        corrupt_images: Literal["skip", "error"] = "skip",
        augment: list[nn.Module] | None = None,
        batch_augment: list[nn.Module] | None = None,
        masks: bool = False,
        allow_identity_changing: bool = False,
        preprocess: Literal[PREPROCESS] = "published",
        whiten_eps: float = 1e-2,
        device_augment: bool | Literal["auto"] = False,
        predict_root: str | None = None,
        predict_top_k: int = 3,
        class_weights: Literal["none", "auto"] | list[float] = "none",
        sampler: Literal["shuffle", "balanced"] = "shuffle",
    ) -> None:
        super().__init__()
        if dataset not in datasets.DATASETS:
            raise ValueError(f"data.dataset={dataset!r} is unknown: choose one of {', '.join(datasets.DATASETS)}.")
        spec = datasets.DATASETS[dataset]
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
        check_folds(num_folds, fold)
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"data.train_fraction={train_fraction}: use a fraction in (0, 1], e.g. 0.1 for a 10% subset.")
        self.train_fraction = train_fraction
        self.num_folds, self.fold = num_folds, fold
        self.download = download
        self.augment = list(augment or [])
        self.batch_augment = list(batch_augment or [])
        if masks and not spec.from_folder:
            raise ValueError(f"data.masks=true needs data.dataset=imagefolder (got {dataset!r}); `shapes` has masks already.")
        self.masks = masks or spec.has_masks
        self.allow_identity_changing = allow_identity_changing
        if not allow_identity_changing:
            self.refuse_identity_changing(self.augment, "data.augment", "data.allow_identity_changing")
        if preprocess not in PREPROCESS:
            raise ValueError(f"data.preprocess={preprocess!r}: choose one of {', '.join(PREPROCESS)}.")
        if not whiten_eps > 0:
            raise ValueError(f"data.whiten_eps={whiten_eps}: use a small positive value such as 0.01.")
        self.preprocess, self.whiten_eps = preprocess, whiten_eps
        self.preprocess_state: dict[str, torch.Tensor] | None = None
        if device_augment == "auto":
            device_augment, why = choose_device_augment(spec, self.augment)
            if not device_augment and spec.torchvision_class is not None:  # surprising only where it could have been on
                rank_zero_info(f"data.device_augment=auto: per-sample augmentation in the DataLoader ({why}).")
        elif not isinstance(device_augment, bool):
            raise ValueError(f"data.device_augment={device_augment!r}: use true, false or auto.")
        if device_augment and spec.from_folder:
            small = ", ".join(name for name, s in datasets.DATASETS.items() if not s.from_folder)
            raise ValueError(
                "data.device_augment=true keeps the whole training split in device memory, which is meant for small "
                f"datasets ({small}): set data.device_augment=false for {dataset}."
            )
        self.device_augment = device_augment
        # Fails now, naming the transform, when one has no batched counterpart.
        self._batched_augment = BatchedAugment(self.augment) if device_augment else None
        self._device_data: tuple[torch.Tensor, torch.Tensor] | None = None
        if corrupt_images not in datasets.CORRUPT_IMAGES:
            raise ValueError(f"data.corrupt_images={corrupt_images!r}: use one of {', '.join(datasets.CORRUPT_IMAGES)}.")
        self.skipped_images: frozenset[Path] = frozenset()
        self._backbone_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        if spec.from_folder:
            self.classes = datasets.image_folder_classes(self.root)  # fails now, not mid-fit
            self.skipped_images = datasets.check_images(self.root, corrupt_images)
            datasets.check_classes_have_images(self.root, self.classes, self.skipped_images)
        else:
            if spec.torchvision_class and not download:
                datasets.check_torchvision_folder(dataset, self.root)
            self.classes = [str(i) for i in range(spec.num_classes)]
        self.splits: datasets.Splits | None = None
        if predict_top_k < 1:
            raise ValueError(f"data.predict_top_k={predict_top_k}: use 1 or more (the most likely classes per image, e.g. 3).")
        self.predict_root, self.predict_top_k = predict_root, predict_top_k
        # Listed and checked now (no images: an error before anything runs), in one order on every rank.
        self.predict_files = find_images(Path(predict_root), corrupt_images) if predict_root else None
        datasets.check_class_weights(class_weights, self.classes)
        if sampler not in datasets.SAMPLERS:
            raise ValueError(f"data.sampler={sampler!r}: use shuffle, or balanced to draw every class equally often.")
        if sampler == "balanced" and class_weights == "auto":
            raise ValueError("data.sampler=balanced with data.class_weights=auto corrects the class imbalance twice "
                             "(minority classes would outweigh the others): use one of them.")
        self.class_weighting, self.sampler = class_weights, sampler

    @property
    def class_weights(self) -> torch.Tensor | None:
        """The training cross-entropy's weight per class (`data.class_weights`), None for `none`."""
        if isinstance(self.class_weighting, str):
            if self.class_weighting == "none":
                return None
            self.setup()
            return datasets.inverse_frequency_weights(datasets.labels_of(self.splits.train), self.classes)
        return torch.tensor(self.class_weighting, dtype=torch.float32)

    def _balanced_sample_weights(self) -> torch.Tensor | None:
        """data.sampler=balanced: per-sample draw weights over the training split (None for shuffle)."""
        return None if self.sampler == "shuffle" else datasets.balanced_sample_weights(datasets.labels_of(self.splits.train))

    def _training_sampler(self) -> WeightedRandomSampler | None:
        weights = self._balanced_sample_weights()
        if weights is None:
            return None
        seed = int(torch.randint(2**62, ()))
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # one draw for all ranks: DistributedSamplerWrapper shards it
            seed = trainer.strategy.broadcast(seed)
        return WeightedRandomSampler(weights, len(weights), replacement=True, generator=torch.Generator().manual_seed(seed))

    def refuse_identity_changing(self, transforms, option: str, allow_option: str) -> None:
        """A7: a ValueError naming each of `transforms` that this dataset declares identity-changing
        (`DatasetSpec.identity_changing`), `option` being where they are configured and `allow_option`
        the opt-out: one rule set and one message for `data.augment` and test-time augmentation views."""
        reasons = identity_changing(transforms, self.spec.identity_changing)
        if reasons:
            raise ValueError(
                f"{option} changes what {self.dataset} images show (A7): {'; '.join(reasons)}. Remove that transform "
                f"(or the recipe that adds it), or set {allow_option}=true if you mean it."
            )

    @property
    def spec(self) -> datasets.DatasetSpec:
        return datasets.DATASETS[self.dataset]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_channels(self) -> int:
        return self.spec.channels

    def prepare_data(self) -> None:
        if self.spec.torchvision_class and self.download:
            datasets.download_torchvision(self.dataset, self.root)

    def _base_transform(self) -> list[nn.Module]:
        if self.spec.at_image_size:  # already float tensors at image_size
            return []
        return self._decode_transform()

    def _decode_transform(self) -> list[nn.Module]:
        """A decoded image (PIL or uint8 tensor, any size) as a float tensor in [0, 1] at image_size."""
        return [v2.ToImage(), v2.Resize((self.image_size, self.image_size), antialias=True), v2.ToDtype(torch.float32, scale=True)]

    def unaugmented_train_batches(self):
        """The training split as the model sees it minus augmentation and pre-processing (P1–P4)."""
        self.setup()
        base = v2.Compose(self._base_transform() or [v2.Identity()])
        return batches_of(TransformedDataset(self.splits.train, base), num_workers=self.num_workers)

    def _published_stats(self) -> tuple | None:
        return self._backbone_stats or self.spec.stats

    def use_backbone_statistics(self, mean: tuple[float, ...], std: tuple[float, ...], source: str) -> None:
        """Normalize with the mean/std a pretrained backbone's weights were trained with (`source`, e.g.
        timm's data config) instead of the dataset's: what `data.preprocess=published` means once the
        weights come from elsewhere. The CLI calls this for pretrained timm backbones. RGB statistics on
        grayscale data are averaged over colour: timm loads RGB weights into a one-channel stem by
        summing the filters, so a gray value acts as that value in all three channels."""
        if self.preprocess != "published":
            raise ValueError(f"{source}'s statistics replace data.preprocess=published only (it is {self.preprocess!r}).")
        if len(mean) != self.num_channels:
            mean = (sum(mean) / len(mean),) * self.num_channels
            std = (sum(std) / len(std),) * self.num_channels
        self._backbone_stats = (tuple(mean), tuple(std))
        self.preprocess_state = None  # a checkpoint's saved statistics still win (load_state_dict)

    # ------------------------------------------------------------------------- pre-processing (P1–P4)
    def fit_preprocessing(self) -> dict[str, torch.Tensor]:
        """Measure on the training split (once) and keep the result; later calls reuse it."""
        if self.preprocess_state is None:
            published = self._published_stats() if self.preprocess == "published" else None
            if self.preprocess == "none":
                self.preprocess_state = {}
            elif published is not None:
                mean, std = published
                self.preprocess_state = {"shift": torch.tensor(mean), "scale": torch.tensor(std)}
            else:
                stats = measure(self.unaugmented_train_batches(), whiten=self.preprocess in NEEDS_COVARIANCE)
                self.preprocess_state = fit_preprocessing(self.preprocess, stats, self.whiten_eps)
        return self.preprocess_state

    def preprocess_transform(self) -> Preprocess:
        return Preprocess(self.preprocess, self.fit_preprocessing())

    def state_dict(self) -> dict[str, Any]:
        # The class names too: `predict` labels rows with the checkpoint's own classes.
        return {**super().state_dict(), "preprocess": self.preprocess, "preprocess_state": self.fit_preprocessing(),
                "classes": list(self.classes)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.classes = list(state_dict.get("classes", self.classes))
        if "preprocess_state" not in state_dict:
            return
        saved = state_dict["preprocess"]
        if saved != self.preprocess:
            warnings.warn(
                f"data.preprocess={self.preprocess!r} but the checkpoint was trained with {saved!r}: "
                f"using the checkpoint's {saved!r} statistics so the model sees the inputs it was trained on.",
                stacklevel=2,
            )
            self.preprocess = saved
        self.preprocess_state = dict(state_dict["preprocess_state"])
        self._pipelines = None  # built with the older statistics

    def _build_pipelines(self) -> tuple[nn.Module, nn.Module]:
        if getattr(self, "_pipelines", None) is None:
            base, preprocess = self._base_transform(), self.preprocess_transform()
            self._pipelines = (v2.Compose([*base, *self.augment, preprocess]), v2.Compose([*base, preprocess]))
        return self._pipelines

    @property
    def train_transform(self) -> nn.Module:
        return self._build_pipelines()[0]

    @property
    def eval_transform(self) -> nn.Module:
        return self._build_pipelines()[1]

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        self.splits = self.spec.loader(datasets.LoadOptions(
            self.dataset, self.root, self.image_size, self.val_fraction, self.test_fraction, self.split_seed,
            masks=self.masks, skip=self.skipped_images,
        ))
        self.splits = k_fold_splits(self.splits, self.num_folds, self.fold, self.split_seed)  # E2; as is when num_folds=1
        if self.train_fraction < 1.0:  # the same stratified subset for every training seed (split_seed decides)
            subset = datasets.carve(self.splits.train, (self.train_fraction,), self.split_seed)[1]
            self.splits = dataclasses.replace(self.splits, train=subset)
        # Pipelines (and pre-processing statistics) are built at the first dataloader: Lightning
        # restores a checkpoint's statistics after `setup`, so they are never measured twice.

    def _loader(self, dataset: Dataset, transform: nn.Module, shuffle: bool, sampler=None) -> DataLoader:
        return DataLoader(
            TransformedDataset(dataset, transform),
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _device_tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split once as (images, labels) on `device`: resized, before ToDtype (uint8 stays uint8)."""
        if self._device_data is None or self._device_data[0].device != device:
            base = [t for t in self._base_transform() if not isinstance(t, v2.ToDtype)]  # cast per batch instead
            loader = DataLoader(TransformedDataset(self.splits.train, v2.Compose(base or [v2.Identity()])), batch_size=512,
                                num_workers=self.num_workers)
            parts = [(images.as_subclass(torch.Tensor), torch.as_tensor(labels)) for images, labels in loader]
            self._device_data = tuple(torch.cat(p).to(device) for p in zip(*parts, strict=True))
        return self._device_data

    def _device_batches(self, device: torch.device | None = None) -> DeviceBatches:
        trainer = getattr(self, "trainer", None)
        if device is None:
            device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        images, labels = self._device_tensors(device)

        def finish(batch: torch.Tensor) -> torch.Tensor:  # statistics read per batch: a restored checkpoint's count
            return preprocess_batch(batch, self.preprocess, self.fit_preprocessing())

        weights = self._balanced_sample_weights()
        return DeviceBatches(images, labels, self.batch_size, self._batched_augment, finish, rank, world,
                             sample_weights=None if weights is None else weights.to(device))

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        if self.device_augment:
            return self._device_batches()
        return self._loader(self.splits.train, self.train_transform, shuffle=True, sampler=self._training_sampler())

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, self.eval_transform, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, self.eval_transform, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_files is not None:  # data.predict_root: (image, index) of each file
            transform = v2.Compose([*self._decode_transform(), self.preprocess_transform()])
            return self._loader(ImageFiles(self.predict_files, self.num_channels), transform, shuffle=False)
        return self._loader(self.splits.test, self.eval_transform, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # MixUp / CutMix (A8) on the device, training only: validation/test/predict keep hard labels.
        trainer = getattr(self, "trainer", None)
        # (The model summary sends its example input through here too: a bare tensor, left alone.)
        if self.batch_augment and trainer is not None and trainer.training and isinstance(batch, (list, tuple)):
            images, targets = batch
            return mix_batch(images, targets, self.batch_augment, self.num_classes)
        return batch
