"""D2 — the loss curve: a tiny-batch run on digits is named noisy; the same run with batch 64 is not."""

from __future__ import annotations

from functools import partial

import torch
from pytorch_lightning import Trainer, seed_everything

from cnn_tricks.callbacks.lr_curve_diagnosis import NOISY, LossCurveDiagnosis


def loss_noise(pkg, batch_size: int, steps: int) -> LossCurveDiagnosis:
    seed_everything(0, verbose=False)
    diagnosis = LossCurveDiagnosis()
    data = pkg.ImageDataModule("digits", image_size=8, batch_size=batch_size)
    model = pkg.ImageClassifier(image_size=8, backbone_options={"widths": [8, 16], "convs_per_stage": 1},
                                optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
    Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, accelerator="cpu", callbacks=[diagnosis]).fit(model, data)
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
