"""D1 — learning-rate curve shapes: on digits, LR 10 is named too high, LR 1e-5 too low, the default good."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import seed_everything
from tiny import digits_convnet, quiet_trainer

from cnn_tricks.callbacks.lr_curve_diagnosis import LossCurveDiagnosis, diagnose_loss_curve


def fit_digits(pkg, lr: float, batch_size: int = 64, epochs: int = 3, limit_batches: int | None = None) -> LossCurveDiagnosis:
    """The project's own model and data (a small sized convnet on 8x8 digits), default optimizer but `lr`."""
    seed_everything(0, verbose=False)
    diagnosis = LossCurveDiagnosis()
    data = pkg.ImageDataModule("digits", image_size=8, batch_size=batch_size)
    model = digits_convnet(pkg, lr=lr)
    quiet_trainer(callbacks=[diagnosis], max_epochs=epochs, limit_train_batches=limit_batches, limit_val_batches=1).fit(model, data)
    return diagnosis


def test_D1_default_lr_is_good_lr_10_too_high_lr_1e5_too_low(pkg):
    default = fit_digits(pkg, 0.1)
    high = fit_digits(pkg, 10.0)
    low = fit_digits(pkg, 1e-5)
    for name, run in (("0.1", default), ("10", high), ("1e-5", low)):
        print(f"LR {name}: {run.diagnosis.verdict} (drop {run.diagnosis.drop:.2f}, noise {run.diagnosis.noise:.3f}, "
              f"{run.diagnosis.steps} steps)")
    assert default.diagnosis.kind == "good" and "good" in default.diagnosis.verdict
    assert high.diagnosis.kind == "very_high" and "too high" in high.diagnosis.verdict
    assert "divide the LR" in high.diagnosis.advice
    assert low.diagnosis.kind == "low" and "too low" in low.diagnosis.verdict
    # a verdict each epoch, and one more at fit end
    assert [when for when, _, _ in default.history] == ["epoch 0", "epoch 1", "epoch 2", "end of fit"]
    assert len(default.losses) == len(default.lrs) == 60 and default.lrs[0] == pytest.approx(0.1)


def test_D1_curve_shapes_on_synthetic_curves():
    steps = torch.arange(100, dtype=torch.float64)
    good = 2.3 * torch.exp(-steps / 15) + 0.05
    plateau = 1.2 + 1.1 * torch.exp(-steps / 3)  # fast drop, then flat at half the first loss
    slow = 2.3 - 0.004 * steps
    diverging = 2.3 * torch.exp(steps / 10)
    assert diagnose_loss_curve(good.tolist()).kind == "good"
    assert diagnose_loss_curve(plateau.tolist()).kind == "high"
    assert "divide the LR by 2 (or by 5)" in diagnose_loss_curve(plateau.tolist()).advice
    assert diagnose_loss_curve(slow.tolist()).kind == "low"
    assert diagnose_loss_curve(diverging.tolist()).kind == "very_high"
    assert diagnose_loss_curve([2.3, 2.2, float("nan")] * 5).kind == "very_high"
    assert diagnose_loss_curve([2.3] * 5).kind == "short"


def test_D1_thresholds_are_validated():
    with pytest.raises(ValueError, match="explode_factor=1"):
        LossCurveDiagnosis(explode_factor=1)
    with pytest.raises(ValueError, match="low_drop=0.6, linear_drop=0.5"):
        LossCurveDiagnosis(low_drop=0.6, linear_drop=0.5)
