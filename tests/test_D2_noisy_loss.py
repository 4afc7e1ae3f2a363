"""D2 — the loss curve: a tiny-batch run on digits is named noisy; the same run with batch 64 is not."""

from __future__ import annotations

from pytorch_lightning import seed_everything
from tiny import digits_convnet, quiet_trainer

from cnn_tricks.callbacks.lr_curve_diagnosis import NOISY, LossCurveDiagnosis


def loss_noise(pkg, batch_size: int, steps: int) -> LossCurveDiagnosis:
    seed_everything(0, verbose=False)
    diagnosis = LossCurveDiagnosis()
    data = pkg.ImageDataModule("digits", image_size=8, batch_size=batch_size)
    model = digits_convnet(pkg, lr=0.1)
    quiet_trainer(callbacks=[diagnosis], max_steps=steps, limit_val_batches=0).fit(model, data)
    return diagnosis


def test_D2_tiny_batch_run_is_named_noisy(pkg):
    tiny = loss_noise(pkg, batch_size=4, steps=100)
    normal = loss_noise(pkg, batch_size=64, steps=40)
    print(f"noise / first loss: batch 4 {tiny.diagnosis.noise:.3f}, batch 64 {normal.diagnosis.noise:.3f}")
    assert tiny.diagnosis.noisy and not normal.diagnosis.noisy
    assert tiny.diagnosis.noise > 2 * normal.diagnosis.noise
    assert any(f.source == "D2" and "batch may be too small" in f.verdict for f in tiny.findings())
    assert not any(f.source == "D2" for f in normal.findings())
    assert "increase the batch size" in NOISY[1]
