"""P3 — min/max: each channel's training-split min becomes exactly -1 and its max exactly 1."""

from __future__ import annotations

import importlib

import torch
from augment_helpers import recipe


def test_P3_minmax_bounds_are_exactly_minus_one_and_one(pkg):
    mode = recipe("preprocess/minmax")["data"]["preprocess"]
    dm = pkg.ImageDataModule("digits", preprocess=mode)
    dm.setup("fit")
    train = torch.cat([images for images, _ in dm._loader(dm.splits.train, dm.eval_transform, shuffle=False)])
    assert float(train.min()) == -1.0 and float(train.max()) == 1.0
    prep = importlib.import_module(f"{pkg.__name__}.transforms.preprocessing")
    images = torch.stack([torch.rand(500) * 4 + 10, torch.rand(500) - 3]).T.reshape(500, 2, 1, 1)
    out = torch.stack([prep.Preprocess("minmax", prep.fit_preprocessing("minmax", prep.measure([images])))(x) for x in images])
    assert torch.allclose(out.amin(dim=(0, 2, 3)), -torch.ones(2), atol=1e-6)
    assert torch.allclose(out.amax(dim=(0, 2, 3)), torch.ones(2), atol=1e-6)
