"""A8 — MixUp/CutMix targets are the right convex combinations; nothing is mixed outside training;
the model trains on probability targets; label smoothing and random erasing do what they say."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from augment_helpers import recipe, recipe_transforms
from tiny import quiet_trainer


def mix(pkg):
    return importlib.import_module(f"{pkg.__name__}.transforms.batch_mix").mix_batch


def test_A8_mixup_targets_are_the_images_convex_combination(pkg):
    (mixup,) = recipe_transforms("augment/mixup", pkg, key="batch_augment+")
    torch.manual_seed(0)
    images, labels = torch.rand(8, 1, 4, 4), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    for _ in range(5):
        mixed, targets = mix(pkg)(images, labels, [mixup], num_classes=10)
        partner = images.roll(1, dims=0)  # torchvision mixes each image with the previous one
        lam = float(((mixed - partner) / (images - partner))[0].median())
        assert torch.allclose(mixed, lam * images + (1 - lam) * partner, atol=1e-5)
        expected = lam * F.one_hot(labels, 10) + (1 - lam) * F.one_hot(labels.roll(1), 10)
        assert torch.allclose(targets, expected.float(), atol=1e-5)


def test_A8_cutmix_targets_are_weighted_by_the_pasted_area(pkg):
    (cutmix,) = recipe_transforms("augment/cutmix", pkg, key="batch_augment+")
    torch.manual_seed(1)
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 16, 16).clone()
    labels = torch.arange(6)
    for _ in range(5):
        mixed, targets = mix(pkg)(images, labels, [cutmix], num_classes=6)
        for i in range(6):
            own = float((mixed[i] == i).float().mean())  # share of image i still its own pixels
            assert targets[i, i] == pytest.approx(own, abs=1e-5) or own == 1.0 and targets[i, i] == 1.0
            assert targets[i].sum() == pytest.approx(1.0)


def test_A8_batches_are_mixed_in_training_only(pkg):
    (mixup,) = recipe_transforms("augment/mixup", pkg, key="batch_augment+")
    dm = pkg.ImageDataModule("digits", batch_augment=[mixup])
    batch = (torch.rand(4, 1, 32, 32), torch.tensor([1, 2, 3, 4]))
    dm.trainer = SimpleNamespace(training=False)
    images, targets = dm.on_after_batch_transfer(batch, 0)
    assert targets is batch[1] and images is batch[0]
    dm.trainer = SimpleNamespace(training=True)
    images, targets = dm.on_after_batch_transfer(batch, 0)
    assert targets.shape == (4, 10) and torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_A8_model_trains_on_mixed_targets(pkg, tmp_path):
    mixers = recipe_transforms("augment/mixup", pkg, key="batch_augment+") + recipe_transforms("augment/cutmix", pkg, key="batch_augment+")
    dm = pkg.ImageDataModule("digits", image_size=16, batch_augment=mixers)
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=16, backbone_options={"widths": [8, 16]})
    trainer = quiet_trainer(tmp_path, max_steps=4, limit_val_batches=1, accelerator="auto")
    trainer.fit(model, dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert 0.0 <= float(trainer.callback_metrics["train/acc"]) <= 1.0


def test_A8_label_smoothing_and_random_erasing_recipes(pkg):
    smoothing = recipe("augment/label-smoothing")["model"]["label_smoothing"]
    model = pkg.ImageClassifier(label_smoothing=smoothing)
    logits, labels = torch.randn(5, 10), torch.tensor([0, 3, 9, 2, 2])
    soft = F.one_hot(labels, 10) * (1 - smoothing) + smoothing / 10
    assert torch.allclose(model.loss(logits, labels), -(soft * logits.log_softmax(-1)).sum(-1).mean(), atol=1e-6)
    (erasing,) = recipe_transforms("augment/random-erasing", pkg)
    erasing.p = 1.0
    image = torch.rand(1, 32, 32) + 0.5
    erased = erasing(image)
    ys, xs = (erased[0] == 0).nonzero(as_tuple=True)
    assert len(ys) > 0 and len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # one rectangle
