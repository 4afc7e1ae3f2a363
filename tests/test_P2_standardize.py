"""P2 — normalize: per-channel mean ~ 0 and std ~ 1 on the training split, measured there."""

from __future__ import annotations

import importlib

import torch
from augment_helpers import recipe


def test_P2_standardize_gives_unit_std_per_channel(pkg):
    mode = recipe("preprocess/standardize")["data"]["preprocess"]
    dm = pkg.ImageDataModule("shapes", preprocess=mode)
    dm.setup("fit")
    train = torch.cat([images for images, _ in dm._loader(dm.splits.train, dm.eval_transform, shuffle=False)])
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-3
    raw = torch.stack([dm.splits.train[i][0] for i in range(len(dm.splits.train))])
    assert abs(float(raw.std()) - 1) > 0.5


def test_P2_statistics_are_per_channel(pkg):
    prep = importlib.import_module(f"{pkg.__name__}.transforms.preprocessing")
    images = torch.stack([torch.rand(2000) * 4 + 10, torch.randn(2000) * 0.1 - 3, torch.rand(2000)]).T.reshape(2000, 3, 1, 1)
    state = prep.fit_preprocessing("standardize", prep.measure([images[:700], images[700:]]))
    out = torch.stack([prep.Preprocess("standardize", state)(x) for x in images])
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(out.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
