"""A (speed) — batched on-device augmentation: same distribution as the per-sample path, training only.

The distribution tests compare, over many draws of one structured image, the per-pixel mean and
second moment of the two paths with a z-score per pixel: mean z^2 is ~1 when both draw from the
same distribution. Each case also runs the batched path with ONE parameter changed and checks
the same statistic flags it, so the comparison can fail. Ranges are asymmetric (rotations 0..20
degrees, lens k > 0) so a sign error in a convention shows up too.
"""

from __future__ import annotations

import importlib
import logging

import pytest
import torch
from tiny import quiet_trainer
from torchvision.transforms import v2

N = 500  # draws per path and case
SIZE = 16


def structured_image() -> torch.Tensor:
    """A 3x16x16 image with no symmetry: a colour gradient, an off-centre L and a blob."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    image = torch.stack([0.2 + 0.3 * xs, 0.1 + 0.2 * ys, 0.3 * torch.ones_like(xs)])
    image[0, 3:12, 4:6] = 0.95
    image[0, 10:12, 4:10] = 0.95
    image[2, 4:8, 10:14] = 0.8
    return image


def moments_z2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared z-score of the per-pixel mean and second moment of two samples (N, C, H, W)."""
    total = []
    for fa, fb in ((a, b), (a**2, b**2)):
        se2 = fa.var(dim=0) / len(fa) + fb.var(dim=0) / len(fb)
        total.append(((fa.mean(dim=0) - fb.mean(dim=0)) ** 2 / (se2 + 1e-6)).flatten())
    return float(torch.cat(total).mean())


def per_sample(transform, image: torch.Tensor, n: int = N) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.stack([transform(image.clone()) for _ in range(n)])


def batched(pkg, transform, image: torch.Tensor, n: int = N, seed: int = 1) -> torch.Tensor:
    batched_mod = importlib.import_module(f"{pkg.__name__}.transforms.batched")
    return batched_mod.BatchedAugment([transform])(image.expand(n, -1, -1, -1).clone(), torch.Generator().manual_seed(seed))


def cases(pkg):
    """(name, transform, the same transform with one parameter changed)."""
    t = importlib.import_module(f"{pkg.__name__}.transforms")
    return {
        "flip": (v2.RandomHorizontalFlip(0.5), v2.RandomHorizontalFlip(0.3)),
        "pad_crop": (t.PadAndCrop(2), t.PadAndCrop(1)),
        "pad_crop_reflect": (t.PadAndCrop(3, padding_mode="reflect"), t.PadAndCrop(3, padding_mode="edge")),
        "scale_crop": (t.RandomScaleCrop(scale=(0.4, 1.0)), t.RandomScaleCrop(scale=(0.7, 1.0))),
        "resized_crop": (v2.RandomResizedCrop(SIZE, scale=(0.4, 1.0)), v2.RandomResizedCrop(SIZE, scale=(0.8, 1.0))),
        "lens": (t.LensDistortion(k=(0.05, 0.3)), t.LensDistortion(k=(-0.3, -0.05))),
        "stretch_shear": (t.RandomStretchShear(shear=(0, 15), degrees=(0, 15)), t.RandomStretchShear(shear=(0, 15), degrees=(-15, 0))),
        "affine": (v2.RandomAffine(degrees=(0, 20), translate=(0.1, 0.1), scale=(0.9, 1.1), shear=(0, 10, 0, 5)),
                   v2.RandomAffine(degrees=(0, 20), translate=(0.1, 0.1), scale=(0.9, 1.1), shear=(-10, 0, 0, 5))),
        "rotation": (v2.RandomRotation((0, 20)), v2.RandomRotation((-20, 0))),
        "color_jitter": (v2.ColorJitter(0.4, 0.4, 0.4, 0.1), v2.ColorJitter(0.4, 0.4, 0.4, 0.0)),
        "erasing": (v2.RandomErasing(p=0.5, value=0.0), v2.RandomErasing(p=0.2, value=0.0)),
        "combination": (t.RandomCombination([v2.RandomRotation((0, 20)), t.PadAndCrop(2), t.LensDistortion((0.05, 0.3))], k=2),
                        t.RandomCombination([v2.RandomRotation((0, 20)), t.PadAndCrop(2), t.LensDistortion((0.05, 0.3))], k=1)),
    }


CASES = ["flip", "pad_crop", "pad_crop_reflect", "scale_crop", "resized_crop", "lens", "stretch_shear", "affine",
         "rotation", "color_jitter", "erasing", "combination"]


@pytest.mark.parametrize("name", CASES)
def test_A_device_augment_same_distribution_per_transform(pkg, name):
    same, changed = cases(pkg)[name]
    image = structured_image()
    reference = per_sample(same, image)
    z_same = moments_z2(reference, batched(pkg, same, image))
    z_changed = moments_z2(reference, batched(pkg, changed, image))
    print(f"{name}: mean z^2 same config {z_same:.2f}, one parameter changed {z_changed:.2f}")
    assert z_same < 2.0, f"{name}: the batched path differs from the per-sample path (mean z^2 {z_same:.2f})"
    assert z_changed > 2 * max(z_same, 1.0), f"{name}: the statistic cannot tell a changed parameter ({z_changed:.2f})"


def test_A_device_augment_flip_rate_matches(pkg):
    image = structured_image()
    for p in (0.2, 0.5):
        out = batched(pkg, v2.RandomHorizontalFlip(p), image, n=4000)
        rate = float((out == image.flip(-1)).flatten(1).all(dim=1).float().mean())
        assert abs(rate - p) < 0.03, (p, rate)


def test_A_device_augment_datamodule_paths_agree_with_preprocessing(pkg):
    """Whole DataModule, digits: without augmentation both paths yield the same set of images
    (storage + pre-processing identical); with pad-and-crop the pixel statistics agree."""
    t = importlib.import_module(f"{pkg.__name__}.transforms")
    for preprocess in ("standardize", "minmax"):
        plain = pkg.ImageDataModule("digits", image_size=16, preprocess=preprocess)
        fast = pkg.ImageDataModule("digits", image_size=16, preprocess=preprocess, device_augment=True)
        sums = []
        for dm in (plain, fast):
            dm.setup("fit")
            batches = list(dm.train_dataloader())
            images = torch.cat([b[0] for b in batches])
            labels = torch.cat([torch.as_tensor(b[1]) for b in batches])
            sums.append((images.sum(dim=0), torch.bincount(labels, minlength=10), len(images)))
        assert sums[0][2] == sums[1][2] and torch.equal(sums[0][1], sums[1][1])
        assert torch.allclose(sums[0][0], sums[1][0], atol=1e-2)
    plain = pkg.ImageDataModule("digits", image_size=16, augment=[t.PadAndCrop(2)])
    fast = pkg.ImageDataModule("digits", image_size=16, augment=[t.PadAndCrop(2)], device_augment=True)
    epochs = []
    for dm in (plain, fast):
        dm.setup("fit")
        torch.manual_seed(0)
        epochs.append(torch.cat([b[0] for _ in range(2) for b in dm.train_dataloader()]))
    assert moments_z2(*epochs) < 2.0


def test_A_device_augment_preprocess_batch_equals_per_sample(pkg):
    prep = importlib.import_module(f"{pkg.__name__}.transforms.preprocessing")
    images = torch.rand(40, 3, 4, 4)
    stats = prep.measure([images], whiten=True)
    for mode in ("standardize", "center", "minmax", "zca", "pca", "none"):
        state = prep.fit_preprocessing(mode, stats) if mode != "none" else {}
        one_by_one = torch.stack([prep.Preprocess(mode, state)(image) for image in images])
        assert torch.allclose(prep.preprocess_batch(images, mode, state), one_by_one, atol=1e-5), mode


def test_A_device_augment_batches_shapes_dtypes_and_training_only(pkg):
    t = importlib.import_module(f"{pkg.__name__}.transforms")
    dm = pkg.ImageDataModule("digits", image_size=16, batch_size=32, augment=[t.PadAndCrop(3)], device_augment=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    images, labels = next(iter(loader))
    assert images.shape == (32, 1, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.long
    assert len(loader) == -(-len(dm.splits.train) // 32) == sum(1 for _ in loader)
    stored, _ = dm._device_data
    assert stored.shape == (len(dm.splits.train), 1, 16, 16)
    for loader in (dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):  # no augmentation there
        image, _ = loader.dataset[0]
        assert torch.equal(image, dm.eval_transform(loader.dataset.dataset[0][0]))
    # Two epochs differ (new shuffle and new draws), and seed_everything repeats them.
    torch.manual_seed(3)
    first = next(iter(loader := dm.train_dataloader()))[0]
    second = next(iter(loader))[0]
    torch.manual_seed(3)
    assert not torch.equal(first, second) and torch.equal(first, next(iter(dm.train_dataloader()))[0])


def test_A_device_augment_uint8_storage_for_torchvision_style_data(pkg):
    """A uint8 PIL dataset (like MNIST/CIFAR) is stored as uint8 at image_size and cast per batch."""
    from PIL import Image
    from torch.utils.data import Dataset

    datasets = importlib.import_module(f"{pkg.__name__}.datasets")

    pixels = (torch.rand(50, 20, 20, 3, generator=torch.Generator().manual_seed(0)) * 255).byte()

    class Pil(Dataset):
        def __len__(self):
            return 50

        def __getitem__(self, index):
            return Image.fromarray(pixels[index].numpy()), index % 10

    dm = pkg.ImageDataModule("cifar10", image_size=16, batch_size=25, preprocess="none", device_augment=True)
    dm.splits = datasets.Splits(Pil(), Pil(), Pil(), [str(i) for i in range(10)])
    images, _ = next(iter(dm.train_dataloader()))
    assert dm._device_data[0].dtype == torch.uint8 and dm._device_data[0].shape == (50, 3, 16, 16)
    assert images.dtype == torch.float32 and 0.0 <= images.min() and images.max() <= 1.0
    reference = torch.stack([dm.eval_transform(Pil()[i][0]) for i in range(50)])
    got = torch.cat([b[0] for b in dm.train_dataloader()])
    assert torch.allclose(got.sum(dim=0), reference.sum(dim=0), atol=1e-3)


def test_A_device_augment_flag_validation(pkg, tmp_path):
    with pytest.raises(ValueError, match=r"RandAugment.*no batched counterpart.*device_augment=false"):
        pkg.ImageDataModule("digits", augment=[v2.RandAugment()], device_augment=True)
    with pytest.raises(ValueError, match=r"RandomRotation.*expand.*device_augment=false"):
        pkg.ImageDataModule("digits", augment=[v2.RandomRotation(10, expand=True)], device_augment=True)
    with pytest.raises(ValueError, match=r"interpolation='bicubic'"):
        pkg.ImageDataModule("digits", augment=[v2.RandomAffine(5, interpolation=v2.InterpolationMode.BICUBIC)],
                            device_augment=True)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"device_augment=false for imagefolder"):
        pkg.ImageDataModule("imagefolder", root=str(tmp_path), device_augment=True)
    pkg.ImageDataModule("digits", augment=[v2.RandAugment()])  # the per-sample path takes any transform


def test_A_device_augment_auto_takes_the_batched_path_where_it_can(pkg, tmp_path, caplog):
    """`auto` (the generated config's choice for the MNIST family and CIFAR): in-memory torchvision data with
    batchable transforms trains from one tensor; a transform without a batched form keeps the per-sample path
    and says which one; image folders and the embedded digits keep the DataLoader; anything else is refused."""
    from test_splits_and_imbalance import write_fake_mnist

    t = importlib.import_module(f"{pkg.__name__}.transforms")
    datamodule = importlib.import_module(f"{pkg.__name__}.datamodule")
    write_fake_mnist(tmp_path, "FashionMNIST", train_labels=list(range(10)) * 6, test_labels=list(range(10)))
    fast = pkg.ImageDataModule("fashion_mnist", root=str(tmp_path), download=False, image_size=16, batch_size=8,
                               augment=[v2.RandomHorizontalFlip(), t.PadAndCrop(2)], device_augment="auto")
    fast.setup("fit")
    assert fast.device_augment is True and isinstance(fast.train_dataloader(), datamodule.DeviceBatches)
    images, labels = next(iter(fast.train_dataloader()))
    assert images.shape == (8, 1, 16, 16) and labels.shape == (8,)

    lightning_log = logging.getLogger("pytorch_lightning")  # rank_zero_info's logger (it does not propagate)
    lightning_log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    try:
        slow = pkg.ImageDataModule("fashion_mnist", root=str(tmp_path), download=False, augment=[v2.RandAugment()],
                                   device_augment="auto")
    finally:
        lightning_log.removeHandler(caplog.handler)
    assert slow.device_augment is False
    assert "data.device_augment=auto: per-sample augmentation in the DataLoader (RandAugment has no batched" in caplog.text
    assert pkg.ImageDataModule("digits", device_augment="auto").device_augment is False
    (tmp_path / "folder" / "a").mkdir(parents=True), (tmp_path / "folder" / "b").mkdir()
    assert datamodule.choose_device_augment(datamodule.datasets.DATASETS["imagefolder"], [])[0] is False
    with pytest.raises(ValueError, match=r"data.device_augment='yes': use true, false or auto"):
        pkg.ImageDataModule("digits", device_augment="yes")


def test_A_device_augment_short_fit_through_trainer(pkg, tmp_path):
    t = importlib.import_module(f"{pkg.__name__}.transforms")
    dm = pkg.ImageDataModule("digits", image_size=16, augment=[t.PadAndCrop(2), v2.ColorJitter(0.3, 0.3)],
                             batch_augment=[v2.MixUp(alpha=0.2)], device_augment=True)
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=16, backbone_options={"widths": [8, 16]})
    trainer = quiet_trainer(tmp_path, max_steps=6, limit_val_batches=2, val_check_interval=3, accelerator="auto")
    trainer.fit(model, dm)
    assert trainer.global_step == 6
    assert torch.isfinite(trainer.callback_metrics["train/loss"]) and "val/acc" in trainer.callback_metrics
