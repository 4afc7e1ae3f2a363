"""Stratified splits (val/test carving, k folds), imbalanced-data options (class weights, balanced
sampler) and the MNIST family served from memory.

The class-weight test trains one seeded tiny model twice on the same 10:1 image folder, whose rare
class differs from the common one only by a faint brightening under noise: unweighted, the model leans to
the common class (the prior dominates a weak signal), so the rare class's recall is low; with
`class_weights=auto` the same steps give it a far higher recall and a higher macro recall.
"""

from __future__ import annotations

import importlib
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning import seed_everything
from tiny import quiet_trainer
from torchmetrics.classification import MulticlassRecall

SIDE = 8


def noisy_images(rng, n: int, rare: bool) -> np.ndarray:
    """`n` grey 8x8 uint8 images of noise (std 40); the rare class is 6 grey levels brighter, so their mean
    brightness (std 40/8 = 5 per image) tells them apart only partly."""
    images = 128 + 40 * rng.standard_normal((n, SIDE, SIDE)) + (6 if rare else 0)
    return np.clip(images, 0, 255).astype(np.uint8)


def write_imbalanced_folder(root, common: int = 240, rare: int = 24, per_class_eval: int = 60) -> None:
    """root/train 10:1 (common:rare), root/val and root/test balanced, as RGB PNGs."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", (common, rare)), ("val", (20, 20)), ("test", (per_class_eval, per_class_eval))):
        for name, n in zip(("common", "rare"), counts, strict=True):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, image in enumerate(noisy_images(rng, n, rare=name == "rare")):
                Image.fromarray(image).convert("RGB").save(folder / f"{i}.png")


def recalls(model, datamodule) -> tuple[float, list[float]]:
    """(macro recall, per-class recall) of `model` on the datamodule's test split."""
    macro, per_class = MulticlassRecall(2, average="macro"), MulticlassRecall(2, average=None)
    model.eval()
    with torch.no_grad():
        for images, labels in datamodule.test_dataloader():
            predictions = model(images).argmax(-1)
            macro.update(predictions, labels)
            per_class.update(predictions, labels)
    return float(macro.compute()), per_class.compute().tolist()


@pytest.fixture
def one_thread():
    """Batch-of-32 steps of an 8x8 net: intra-op threads only cost hand-offs on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def train_on_folder(pkg, root, **data_options):
    """The project's classifier (one conv stage, Adam), seeded, 8 epochs of the 10:1 folder (72 steps)."""
    seed_everything(0, verbose=False)
    datamodule = pkg.ImageDataModule("imagefolder", root=str(root), image_size=SIDE, batch_size=32, **data_options)
    model = pkg.ImageClassifier(num_classes=2, in_channels=3, image_size=SIDE,
                                backbone_options={"widths": [8], "convs_per_stage": 1, "batch_norm": False},
                                optimizer=partial(torch.optim.Adam, lr=0.01))
    quiet_trainer(max_epochs=8, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=datamodule)
    return model, datamodule


def test_class_weights_auto_lift_the_rare_class_recall(pkg, tmp_path, one_thread):
    write_imbalanced_folder(tmp_path)
    plain_model, plain_data = train_on_folder(pkg, tmp_path)
    weighted_model, weighted_data = train_on_folder(pkg, tmp_path, class_weights="auto")
    assert plain_model.class_weights is None
    # auto: inverse frequency (240:24 -> 1:10), scaled to mean 1, reached the model's loss
    assert torch.allclose(weighted_model.class_weights, torch.tensor([2 / 11, 20 / 11]))
    plain_macro, (plain_common, plain_rare) = recalls(plain_model, plain_data)
    weighted_macro, (weighted_common, weighted_rare) = recalls(weighted_model, weighted_data)
    print(f"unweighted: macro {plain_macro:.2f}, common {plain_common:.2f}, rare {plain_rare:.2f}; "
          f"auto: macro {weighted_macro:.2f}, common {weighted_common:.2f}, rare {weighted_rare:.2f}")
    assert plain_rare < 0.2 and plain_common > 0.9  # unweighted, the model leans to the common class
    assert weighted_rare > plain_rare + 0.3  # the weights move the decision towards the rare class
    assert weighted_macro > plain_macro + 0.1


# ----------------------------------------------------------------------------- stratified splits
def class_counts(pkg, dataset, num_classes: int = 10) -> torch.Tensor:
    return torch.bincount(pkg.datasets.labels_of(dataset), minlength=num_classes).double()


def test_carved_val_and_test_keep_the_class_proportions(pkg):
    dm = pkg.ImageDataModule("digits", val_fraction=0.15, test_fraction=0.15, split_seed=0)
    dm.setup("fit")
    train, val, test = dm.splits.train, dm.splits.val, dm.splits.test
    whole = class_counts(pkg, train.dataset)
    assert sorted(train.indices + val.indices + test.indices) == list(range(len(train.dataset)))  # disjoint, complete
    for part, bound in ((val, 1.0), (test, 1.0), (train, 2.0)):  # train: what both carved parts left
        expected = whole * len(part) / whole.sum()
        assert (class_counts(pkg, part) - expected).abs().max() < bound


def test_same_seed_same_split_other_seed_other_split(pkg):
    def val_indices(seed):
        dm = pkg.ImageDataModule("digits", split_seed=seed)
        dm.setup("fit")
        return dm.splits.val.indices

    torch.manual_seed(1)  # the global RNG plays no part
    first = val_indices(0)
    torch.manual_seed(2)
    assert val_indices(0) == first and val_indices(1) != first


def test_train_fraction_is_a_stratified_subset_of_the_training_split_only(pkg):
    whole = pkg.ImageDataModule("digits")
    whole.setup("fit")
    part = pkg.ImageDataModule("digits", train_fraction=0.1)
    part.setup("fit")
    chosen = [part.splits.train.dataset.indices[i] for i in part.splits.train.indices]  # a subset of the split
    assert set(chosen) <= set(whole.splits.train.indices) and len(set(chosen)) == len(chosen)
    assert len(chosen) == round(0.1 * len(whole.splits.train))
    expected = class_counts(pkg, whole.splits.train) * 0.1
    assert (class_counts(pkg, part.splits.train) - expected).abs().max() < 1.0  # every class in its share
    assert part.splits.val.indices == whole.splits.val.indices and part.splits.test.indices == whole.splits.test.indices
    torch.manual_seed(5)  # the training seed plays no part: the same subset
    again = pkg.ImageDataModule("digits", train_fraction=0.1)
    again.setup("fit")
    assert again.splits.train.indices == part.splits.train.indices
    with pytest.raises(ValueError, match=r"data.train_fraction=0: use a fraction in \(0, 1\], e.g. 0.1"):
        pkg.ImageDataModule("digits", train_fraction=0)


def test_k_folds_are_disjoint_cover_the_pool_and_stratified(pkg):
    folds = []
    for fold in range(3):
        dm = pkg.ImageDataModule("digits", num_folds=3, fold=fold, split_seed=0)
        dm.setup("fit")
        folds.append(dm.splits)
    pool_size = len(folds[0].train) + len(folds[0].val)
    held_out = [set(s.val.indices) for s in folds]
    assert sum(map(len, held_out)) == pool_size and set().union(*held_out) == set(range(pool_size))
    for splits, validating in zip(folds, held_out, strict=True):
        assert not set(splits.train.indices) & validating
    per_fold = torch.stack([class_counts(pkg, s.val) for s in folds])
    assert (per_fold.max(0).values - per_fold.min(0).values).max() <= 1
    again = pkg.ImageDataModule("digits", num_folds=3, fold=1, split_seed=0)
    again.setup("fit")
    assert again.splits.val.indices == folds[1].val.indices
    assert [len(s.test) for s in folds] == [270] * 3  # the test split is never touched


def test_too_few_samples_to_stratify_warns_and_splits_at_random(pkg):
    tiny = torch.utils.data.TensorDataset(torch.zeros(20, 1), torch.arange(20) % 10)
    with pytest.warns(UserWarning, match=r"Cannot stratify a part of 4 of 20 samples.*split at random"):
        rest, part = pkg.datasets.carve(tiny, (0.2,), seed=0)
    assert (len(rest), len(part)) == (16, 4)


def test_labels_are_read_without_images(pkg, tmp_path):
    from torch.utils.data import ConcatDataset, Subset, TensorDataset

    class NoImages(torch.utils.data.Dataset):
        targets = [2, 0, 1]

        def __len__(self):
            return 3

        def __getitem__(self, index):
            raise AssertionError("labels_of loaded an image")

    labels_of = pkg.datasets.labels_of
    assert labels_of(Subset(ConcatDataset([NoImages(), Subset(NoImages(), [1])]), [3, 0])).tolist() == [0, 2]
    assert labels_of(TensorDataset(torch.zeros(2), torch.tensor([1, 0]))).tolist() == [1, 0]
    with pytest.raises(TypeError, match="labels_of: list keeps no labels.*`targets` attribute"):
        labels_of([(torch.zeros(1), 0)])


# ----------------------------------------------------------------------------- imbalanced data options
def test_balanced_sampler_draws_every_class_about_equally(pkg, tmp_path):
    write_imbalanced_folder(tmp_path, common=200, rare=20, per_class_eval=2)

    def drawn_labels(sampler):
        torch.manual_seed(0)
        dm = pkg.ImageDataModule("imagefolder", root=str(tmp_path), image_size=SIDE, sampler=sampler)
        dm.setup("fit")
        indices = list(dm.train_dataloader().sampler)  # one epoch of indices: no image is loaded
        return indices, torch.bincount(pkg.datasets.labels_of(dm.splits.train)[indices], minlength=2)

    _, shuffled = drawn_labels("shuffle")
    indices, balanced = drawn_labels("balanced")
    assert shuffled.tolist() == [200, 20]
    assert balanced.sum() == 220 and abs(int(balanced[0]) - int(balanced[1])) < 0.2 * 220
    assert drawn_labels("balanced")[0] == indices  # seeded: the same global seed draws the same epoch


def test_balanced_sampler_under_ddp_gives_each_rank_its_share_of_one_draw(pkg, tmp_path):
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    write_imbalanced_folder(tmp_path, common=100, rare=10, per_class_eval=2)
    dm = pkg.ImageDataModule("imagefolder", root=str(tmp_path), image_size=SIDE, sampler="balanced")
    dm.setup("fit")
    shares = []
    for rank in range(2):  # what Lightning wraps a custom sampler in under DDP, once per rank
        torch.manual_seed(0)  # rank 0 broadcasts this draw
        shares.append(list(DistributedSamplerWrapper(dm.train_dataloader().sampler, num_replicas=2, rank=rank)))
    torch.manual_seed(0)
    one_draw = list(dm.train_dataloader().sampler)
    assert sorted(shares[0] + shares[1]) == sorted(one_draw)


def write_fake_mnist(root, folder: str, train_labels, test_labels) -> None:
    """torchvision's raw idx-ubyte files of random 28x28 images with these labels, under root/folder/raw."""
    from test_data import write_idx

    rng = np.random.default_rng(0)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        write_idx(root / folder / "raw", prefix, images, np.asarray(labels, dtype=np.uint8))


def test_balanced_sampler_with_device_augment(pkg, tmp_path):
    write_fake_mnist(tmp_path, "MNIST", train_labels=[0] * 300 + [1] * 30, test_labels=[0, 1] * 5)
    dm = pkg.ImageDataModule("mnist", root=str(tmp_path), download=False, image_size=8, device_augment=True,
                             sampler="balanced")
    dm.setup("fit")
    torch.manual_seed(0)
    drawn = torch.cat([batch_labels for _, batch_labels in dm.train_dataloader()])
    counts = torch.bincount(drawn, minlength=2)
    assert counts.sum() == len(dm.splits.train) and abs(int(counts[0]) - int(counts[1])) < 0.2 * counts.sum()


def test_class_weights_keep_label_smoothing_and_soft_targets(pkg):
    model = pkg.ImageClassifier(num_classes=3, label_smoothing=0.1)
    model.class_weights = torch.tensor([0.5, 1.0, 1.5])
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    smooth = torch.nn.functional.one_hot(labels, 3) * 0.9 + 0.1 / 3
    weighted_terms = -(model.class_weights * smooth * logits.log_softmax(-1)).sum(-1)
    # hard targets: PyTorch averages over the weights of the targets
    assert torch.allclose(model.loss(logits, labels), weighted_terms.sum() / model.class_weights[labels].sum(), atol=1e-6)
    soft = torch.softmax(torch.randn(4, 3), -1)  # MixUp/CutMix targets: weighted, averaged over the batch
    soft_smooth = soft * 0.9 + 0.1 / 3
    expected = -(model.class_weights * soft_smooth * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(model.loss(logits, soft), expected, atol=1e-6)


@pytest.mark.parametrize(("options", "message"), [
    ({"class_weights": "sometimes"}, r"data.class_weights='sometimes': use none, auto, or one positive weight per class"),
    ({"class_weights": [1.0, 2.0]}, r"data.class_weights has 2 weight\(s\) for 10 classes \(0, 1, 2, 3, 4, ...\)"),
    ({"class_weights": [1.0] * 9 + [0.0]}, r"data.class_weights: class '9' has weight 0.0: use none, auto"),
    ({"sampler": "weighted"}, r"data.sampler='weighted': use shuffle, or balanced"),
    ({"sampler": "balanced", "class_weights": "auto"}, r"corrects the class imbalance twice"),
])
def test_bad_imbalance_options_are_named(pkg, options, message):
    with pytest.raises(ValueError, match=message):
        pkg.ImageDataModule("digits", **options)


def test_auto_weights_need_every_class_in_the_training_split(pkg, tmp_path):
    write_fake_mnist(tmp_path, "MNIST", train_labels=np.arange(90) % 9, test_labels=np.arange(10))  # no 9 in train
    dm = pkg.ImageDataModule("mnist", root=str(tmp_path), download=False, class_weights="auto")
    with pytest.raises(ValueError, match="class_weights=auto: class '9' has no sample in the training split"):
        _ = dm.class_weights


def test_cli_takes_a_list_of_class_weights_and_names_a_wrong_one(pkg, project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = importlib.import_module(f"{pkg.__name__}.cli")
    config = ["--config", str(project / "configs/default.yaml"), "--trainer.logger=false"]
    built = cli.CLI(args=[*config, f"--data.class_weights=[{', '.join(['1'] * 9)}, 3]"], run=False)
    assert built.datamodule.class_weights.tolist() == [1.0] * 9 + [3.0]
    with pytest.raises(SystemExit, match="data.class_weights has 2 weight"):
        cli.CLI(args=[*config, "--data.class_weights=[1, 3]"], run=False)


# ----------------------------------------------------------------------------- the MNIST family in memory
@pytest.mark.parametrize(("dataset", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_in_memory_samples_equal_torchvisions_own(pkg, tmp_path, dataset, folder):
    import torchvision.datasets as tvd
    from torchvision.transforms.v2 import functional as TF

    write_fake_mnist(tmp_path, folder, train_labels=np.arange(100) % 10, test_labels=np.arange(10))
    torchvision_own = getattr(tvd, folder)(str(tmp_path), train=True)  # PIL images
    served = pkg.datasets.InMemoryImages(torchvision_own)
    for index in (0, 7, 99):
        (image, label), (pil, own_label) = served[index], torchvision_own[index]
        assert image.dtype == torch.uint8 and torch.equal(image, TF.pil_to_tensor(pil)) and label == own_label
    dm = pkg.ImageDataModule(dataset, root=str(tmp_path), download=False, image_size=32)
    dm.setup("fit")
    (mine, _), index = dm.splits.train[0], dm.splits.train.indices[0]
    assert tuple(mine.shape) == (1, 32, 32)  # resized once, for the whole array
    assert torch.equal(dm.eval_transform(mine), dm.eval_transform(torchvision_own[index][0]))
