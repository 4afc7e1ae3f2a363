"""A1 — horizontal flip: the image is mirrored, the label unchanged, and only on the training split."""

from __future__ import annotations

import torch
from augment_helpers import recipe_transforms


def test_A1_flip_mirrors_training_images_only_and_keeps_labels(pkg):
    (flip,) = recipe_transforms("augment/flip", pkg)
    assert flip.p == 0.5
    flip.p = 1.0  # always, to compare image by image
    dm = pkg.ImageDataModule("shapes", augment=[flip])  # shapes: flips do not change what it shows
    dm.setup("fit")
    for index in range(5):
        image, mask, label = dm.splits.train[index]
        flipped, flipped_label = dm.train_dataloader().dataset[index]
        assert torch.allclose(flipped, dm.eval_transform(image.flip(-1)))
        assert not torch.allclose(flipped, dm.eval_transform(image))
        assert flipped_label == label
        plain, _ = dm.val_dataloader().dataset[index]
        assert torch.allclose(plain, dm.eval_transform(dm.splits.val[index][0]))


def test_A1_flip_probability_half_mirrors_about_half(pkg):
    (flip,) = recipe_transforms("augment/flip", pkg)
    image = torch.rand(1, 8, 8)
    torch.manual_seed(0)
    mirrored = sum(torch.equal(flip(image), image.flip(-1)) for _ in range(400))
    assert 150 < mirrored < 250
