"""E3 — checkpoint ensemble: the recipe's ModelCheckpoint keeps the top-k epochs of one run in a subfolder,
and those checkpoints ensemble into a model whose NLL is below the members' mean."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import yaml
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ModelCheckpoint
from tiny import quiet_trainer

from cnn_tricks.utils.ensembling import combine, nll

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "ensemble" / "checkpoints.yaml"


def test_E3_recipe_keeps_the_top_k_epochs_in_a_subfolder_and_they_ensemble(pkg, tmp_path):
    (entry,) = yaml.safe_load(RECIPE.read_text())["trainer"]["callbacks+"]
    assert entry["class_path"] == "ModelCheckpoint"
    args = entry["init_args"]
    torch.manual_seed(0)
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=16, backbone_options={"widths": [4, 8]})
    data = pkg.ImageDataModule("digits", image_size=16, batch_size=32)
    keep, losses = ModelCheckpoint(dirpath=tmp_path / "checkpoints", **args), []

    class Losses(Callback):
        def on_validation_end(self, trainer, pl_module):
            losses.append(float(trainer.callback_metrics["val/loss"]))

    trainer = quiet_trainer(callbacks=[Losses(), keep], max_epochs=5, limit_train_batches=4, limit_val_batches=3,
                            num_sanity_val_steps=0, enable_checkpointing=True)
    trainer.fit(model, datamodule=data)
    files = sorted((tmp_path / "checkpoints" / "top").glob("*.ckpt"))
    assert len(files) == args["save_top_k"] == 3  # 5 epochs, the 3 best kept
    assert {Path(p).name for p in keep.best_k_models} == {f.name for f in files}
    assert sorted(float(v) for v in keep.best_k_models.values()) == sorted(losses)[:3]  # the 3 lowest val/loss

    ensemble = importlib.import_module(f"{pkg.__name__}.ensemble").EnsembleModule(str(tmp_path / "checkpoints" / "top"))
    assert len(ensemble.members) == 3
    data.setup("test")
    images, targets = next(iter(data.test_dataloader()))
    logits = ensemble.member_logits(images)
    members_nll = torch.stack([nll(m.softmax(-1), targets).mean() for m in logits])
    assert nll(combine(logits), targets).mean() <= members_nll.mean()
    assert len({round(v, 5) for v in members_nll.tolist()}) == 3  # three different epochs
