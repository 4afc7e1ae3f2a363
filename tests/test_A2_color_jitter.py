"""A2 — color jittering: outputs differ from call to call and stay in the valid [0, 1] range."""

from __future__ import annotations

import torch
from augment_helpers import recipe_transforms


def test_A2_color_jitter_varies_and_stays_in_range(pkg):
    (jitter,) = recipe_transforms("augment/color-jitter", pkg)
    torch.manual_seed(0)
    image = torch.rand(3, 16, 16) * 0.8 + 0.1
    outputs = [jitter(image) for _ in range(8)]
    assert all(o.shape == image.shape and o.min() >= 0 and o.max() <= 1 for o in outputs)
    distinct = {tuple(o.flatten()[:5].tolist()) for o in outputs}
    assert len(distinct) == len(outputs)  # each call draws new factors
    assert all((o - image).abs().mean() > 1e-3 for o in outputs)  # and each differs from the input


def test_A2_color_jitter_runs_on_grayscale_digits(pkg):
    (jitter,) = recipe_transforms("augment/color-jitter", pkg)
    dm = pkg.ImageDataModule("digits", augment=[jitter])
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 1, 32, 32) and torch.isfinite(images).all()
