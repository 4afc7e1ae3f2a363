"""P4 — PCA/ZCA whitening: the whitened training covariance is ~ identity; off by default."""

from __future__ import annotations

import importlib

import pytest
import torch
from augment_helpers import recipe


def covariance(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(len(x), -1).double()
    flat = flat - flat.mean(dim=0)
    return flat.T @ flat / len(flat)


def test_P4_is_off_by_default(pkg):
    assert pkg.ImageDataModule("digits").preprocess == "published"
    assert recipe("preprocess/zca-whitening")["data"]["preprocess"] == "zca"


@pytest.mark.parametrize("kind", ["zca", "pca"])
def test_P4_whitened_covariance_is_identity(pkg, kind):
    # 8x8 digits: 64 pixels, 1257 training images, so the covariance is estimable (3 pixels never vary).
    dm = pkg.ImageDataModule("digits", image_size=8, preprocess=kind, whiten_eps=1e-9)
    dm.setup("fit")
    train = torch.cat([images for images, _ in dm._loader(dm.splits.train, dm.eval_transform, shuffle=False)])
    raw = torch.stack([dm.splits.train[i][0] for i in range(len(dm.splits.train))])
    varying = covariance(raw).diagonal() > 1e-6
    before, after = covariance(raw), covariance(train)
    eye = torch.eye(int(varying.sum()), dtype=torch.float64)
    off_diagonal_before = (before[varying][:, varying] / before.diagonal()[varying].sqrt().outer(before.diagonal()[varying].sqrt()) - eye).abs().max()
    assert off_diagonal_before > 0.5  # neighbouring pixels are strongly correlated before
    if kind == "zca":  # ZCA stays in pixel space: exactly the identity over the pixels that vary
        assert (after[varying][:, varying] - eye).abs().max() < 0.02
    eigenvalues = torch.linalg.eigvalsh(after)
    assert ((eigenvalues - 1).abs() < 0.02).sum() == int(varying.sum())  # one unit-variance direction per varying pixel
    assert (eigenvalues.abs() < 0.02).sum() == int((~varying).sum())


def test_P4_whitening_core_decorrelates_correlated_data(pkg):
    prep = importlib.import_module(f"{pkg.__name__}.transforms.preprocessing")
    torch.manual_seed(0)
    mixing = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [0.3, 0.2, 0.1]])
    images = (torch.randn(4000, 3) @ mixing.T).reshape(4000, 3, 1, 1)
    state = prep.fit_preprocessing("zca", prep.measure([images], whiten=True), eps=1e-8)
    out = torch.stack([prep.Preprocess("zca", state)(x) for x in images])
    assert (covariance(out) - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-3
