"""The DataModule on every dataset kind, driven by small files written in the real on-disk formats."""

from __future__ import annotations

import pickle
import struct
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image


def write_idx(folder, prefix, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def fake_images(rng, n, *shape):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.mark.parametrize(("dataset", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_formats_load_from_idx_files(pkg, tmp_path, dataset, folder):
    rng = np.random.default_rng(0)
    test_labels = rng.integers(0, 10, 10, dtype=np.uint8)
    write_idx(tmp_path / folder / "raw", "train", fake_images(rng, 20, 28, 28), rng.integers(0, 10, 20, dtype=np.uint8))
    write_idx(tmp_path / folder / "raw", "t10k", fake_images(rng, 10, 28, 28), test_labels)
    dm = pkg.ImageDataModule(dataset, root=str(tmp_path), batch_size=4, val_fraction=0.2)
    dm.prepare_data()  # files present: torchvision does not download
    dm.setup("fit")
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (16, 4, 10)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 1, 32, 32) and images.dtype == torch.float32
    assert [label for _, label in dm.test_dataloader().dataset] == test_labels.tolist()
    assert (dm.num_classes, dm.num_channels) == (10, 1)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_formats_load_from_pickled_batches(pkg, tmp_path, monkeypatch, dataset):
    import torchvision.datasets as tvd

    # The files are real CIFAR pickles but not the published ones, so their md5 sums differ.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    rng = np.random.default_rng(0)
    classes = 10 if dataset == "cifar10" else 100
    label_key = "labels" if dataset == "cifar10" else "fine_labels"
    cls = tvd.CIFAR10 if dataset == "cifar10" else tvd.CIFAR100
    base = tmp_path / cls.base_folder
    base.mkdir()
    for name, _ in cls.train_list + cls.test_list:
        batch = {"data": fake_images(rng, 6, 3072), label_key: rng.integers(0, classes, 6).tolist()}
        (base / name).write_bytes(pickle.dumps(batch))
    meta_key = cls.meta["key"]
    (base / cls.meta["filename"]).write_bytes(pickle.dumps({meta_key: [f"class{i}" for i in range(classes)]}))
    dm = pkg.ImageDataModule(dataset, root=str(tmp_path), batch_size=4, download=False)
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32)
    assert dm.num_classes == classes and len(dm.splits.test) == 6


def write_image_folder(root, classes, per_class, size=(12, 10)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(fake_images(rng, 1, size[1], size[0], 3)[0]).save(root / name / f"{i}.png")


def test_image_folder_carves_val_and_test_when_missing(pkg, tmp_path):
    write_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=10)
    dm = pkg.ImageDataModule("imagefolder", root=str(tmp_path / "pets"), image_size=16, batch_size=5,
                             val_fraction=0.2, test_fraction=0.2)
    assert dm.classes == ["cat", "dog"] and dm.num_channels == 3
    dm.setup("fit")
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (12, 4, 4)
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 16, 16)


def test_image_folder_uses_its_own_val_and_test_folders(pkg, tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        write_image_folder(tmp_path / split, ["a", "b", "c"], per_class=n)
    dm = pkg.ImageDataModule("imagefolder", root=str(tmp_path), image_size=8)
    dm.setup("fit")
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (18, 6, 9)


def test_missing_image_folder_is_caught_at_construction(pkg, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.root='.*nowhere'.*does not exist"):
        pkg.ImageDataModule("imagefolder", root=str(tmp_path / "nowhere"))


def test_empty_class_folder_is_named(pkg, tmp_path):
    write_image_folder(tmp_path, ["full"], per_class=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no usable images in class folder.s. empty"):
        pkg.ImageDataModule("imagefolder", root=str(tmp_path))  # at construction, before any run


def test_offline_download_failure_names_the_folder_and_the_option(pkg, tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def no_network(self):
        raise URLError("no network")

    monkeypatch.setattr(tvd.MNIST, "download", no_network)
    dm = pkg.ImageDataModule("mnist", root=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=r"mnist is not in .*data and could not be downloaded \(<urlopen error no network>\)\. Retry when online.*data\.root"):
        dm.prepare_data()
    with pytest.raises(FileNotFoundError, match=r"mnist is not in .*data \(no folder .*MNIST.*data\.root.*data\.download=true"):
        pkg.ImageDataModule("mnist", root=str(tmp_path / "data"), download=False)  # at construction, before any run


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dataset": "svhn"}, "data.dataset='svhn' is unknown"),
    ({"batch_size": 0}, "data.batch_size=0"),
    ({"val_fraction": 0.0}, "data.val_fraction=0.0"),
])
def test_bad_data_options_are_named(pkg, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pkg.ImageDataModule(**kwargs)


def break_images(folder):
    """Three kinds of broken file among good ones: empty, not an image, a PNG cut after its header."""
    (folder / "cat" / "empty.png").write_bytes(b"")
    (folder / "dog" / "notes.jpg").write_text("not an image")
    good = (folder / "dog" / "0.png").read_bytes()
    (folder / "dog" / "cut.png").write_bytes(good[: len(good) // 2])


def test_corrupt_images_are_skipped_and_counted_before_any_run(pkg, tmp_path):
    write_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=10)
    break_images(tmp_path / "pets")
    with pytest.warns(UserWarning, match=r"Skipping 3 of 23 image files under .*pets that cannot be read: .*empty.png"):
        dm = pkg.ImageDataModule("imagefolder", root=str(tmp_path / "pets"), image_size=8, batch_size=20,
                                 val_fraction=0.1, test_fraction=0.1)
    dm.setup("fit")
    assert len(dm.splits.train) + len(dm.splits.val) + len(dm.splits.test) == 20  # the good ones, all of them
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for images, _ in loader:  # every sample decodes
            assert images.shape[1:] == (3, 8, 8)


def test_corrupt_images_stop_the_run_when_asked(pkg, tmp_path):
    write_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=4)
    break_images(tmp_path / "pets")
    with pytest.raises(FileNotFoundError, match=r"3 of 11 image files under .*pets cannot be read: .*Delete or replace them"):
        pkg.ImageDataModule("imagefolder", root=str(tmp_path / "pets"), corrupt_images="error")
    with pytest.raises(ValueError, match=r"data.corrupt_images='ignore': use one of skip, error"):
        pkg.ImageDataModule("imagefolder", root=str(tmp_path / "pets"), corrupt_images="ignore")


def test_image_that_fails_to_decode_mid_run_is_named(pkg, tmp_path):
    write_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=4)
    # A JPEG whose header is intact but whose pixel data is cut: only decoding it finds out.
    jpeg = tmp_path / "pets" / "cat" / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[:-2000])
    dm = pkg.ImageDataModule("imagefolder", root=str(tmp_path / "pets"), corrupt_images="error")  # passes the header check
    dm.setup("fit")
    dataset = pkg.datasets.ImageFolderDataset(tmp_path / "pets", dm.classes)
    index = [i for i, (path, _) in enumerate(dataset.samples) if path.endswith("cut.jpg")][0]
    with pytest.raises(OSError, match=r"cut.jpg: cannot decode this image .*Delete or replace the file"):
        dataset[index]
