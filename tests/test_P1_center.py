"""P1 — zero-centre: per-channel mean ~ 0 on the training split (statistics from it alone), and the
statistics survive a checkpoint round trip: a new DataModule reuses them without measuring."""

from __future__ import annotations

import pytest
import torch
from augment_helpers import recipe
from tiny import quiet_trainer


def train_images(dm) -> torch.Tensor:
    return torch.cat([images for images, _ in dm._loader(dm.splits.train, dm.eval_transform, shuffle=False)])


def test_P1_center_gives_zero_mean_on_the_training_split(pkg):
    mode = recipe("preprocess/center")["data"]["preprocess"]
    dm = pkg.ImageDataModule("digits", preprocess=mode)
    dm.setup("fit")
    train = train_images(dm)
    raw = torch.stack([dm.splits.train[i][0] for i in range(len(dm.splits.train))])
    assert abs(float(train.mean())) < 1e-5
    assert float(raw.mean()) > 0.2  # it was not centred before
    assert torch.allclose(train.std(), raw.std(), atol=1e-5)  # centring only: the scale is untouched
    val = torch.cat([images for images, _ in dm.val_dataloader()])
    assert abs(float(val.mean())) > 1e-4  # validation is shifted by the TRAINING mean, not its own


def test_P1_statistics_survive_a_checkpoint_round_trip(pkg, tmp_path, monkeypatch):
    dm = pkg.ImageDataModule("digits", image_size=16, preprocess="center")
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=16, backbone_options={"widths": [8]})
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=1, accelerator="auto")
    trainer.fit(model, dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["ImageDataModule"]
    assert saved["preprocess"] == "center" and torch.equal(saved["preprocess_state"]["shift"], dm.preprocess_state["shift"])

    fresh = pkg.ImageDataModule("digits", image_size=16, preprocess="center", split_seed=7)  # other split: other stats

    def no_measuring():
        raise AssertionError("statistics were measured again instead of read from the checkpoint")

    monkeypatch.setattr(fresh, "unaugmented_train_batches", no_measuring)
    tester = quiet_trainer(limit_test_batches=1, accelerator="auto")
    tester.test(model, fresh, ckpt_path=str(path), weights_only=True)
    assert torch.equal(fresh.preprocess_state["shift"], dm.preprocess_state["shift"])
    with pytest.warns(UserWarning, match="trained with 'center'"):
        other = pkg.ImageDataModule("digits", preprocess="minmax")
        other.load_state_dict(saved)
    assert other.preprocess == "center"
