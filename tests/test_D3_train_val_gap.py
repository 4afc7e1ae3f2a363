"""D3 — accuracy gap: a tiny-subset big-model run is flagged overfitting; a tiny strongly regularized model under-capacity."""

from __future__ import annotations

import pytest
from pytorch_lightning import seed_everything
from tiny import digits_convnet, quiet_trainer
from torch.utils.data import DataLoader, Subset

from cnn_tricks.callbacks.train_val_gap import TrainValGap, diagnose_gap


def fit_gap(pkg, widths, train_size: int | None, epochs: int, weight_decay: float, lr: float = 0.1) -> TrainValGap:
    seed_everything(0, verbose=False)
    gap = TrainValGap()
    data = pkg.ImageDataModule("digits", image_size=8, batch_size=64)
    data.setup("fit")
    train = data.train_dataloader().dataset
    if train_size is not None:
        train = Subset(train, range(train_size))
    model = digits_convnet(pkg, widths, lr=lr, weight_decay=weight_decay)
    quiet_trainer(callbacks=[gap], max_epochs=epochs).fit(
        model, DataLoader(train, batch_size=64, shuffle=True), DataLoader(data.val_dataloader().dataset, batch_size=270))
    return gap


def test_D3_small_subset_big_model_overfits_tiny_model_lacks_capacity(pkg):
    overfit = fit_gap(pkg, widths=[64, 128], train_size=40, epochs=25, weight_decay=0.0)
    tiny = fit_gap(pkg, widths=[1], train_size=None, epochs=2, weight_decay=0.05)
    for name, run in (("40 images, widths [64, 128]", overfit), ("widths [1], weight decay 0.05", tiny)):
        print(f"{name}: {run.diagnosis.verdict}")
    assert overfit.diagnosis.kind == "overfitting" and "increase regularization" in overfit.diagnosis.advice
    assert tiny.diagnosis.kind == "under_capacity" and "increase model capacity" in tiny.diagnosis.advice
    assert len(tiny.history) == 2


def test_D3_rules_and_thresholds():
    assert diagnose_gap(0.99, 0.97).kind == "good"
    assert diagnose_gap(0.99, 0.97, max_gap=0.01).kind == "overfitting"
    assert diagnose_gap(0.85, 0.84, min_accuracy=0.8).kind == "good"
    with pytest.raises(ValueError, match="max_gap=0"):
        TrainValGap(max_gap=0)
