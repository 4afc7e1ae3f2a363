"""I1-I4 — which layers an init callback touches, and when: never pretrained layers, never on
resume from a checkpoint, never excluded prefixes, once per model."""

from __future__ import annotations

import importlib

import pytest
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnn_tricks.callbacks.init_schemes import PRETRAINED_ATTR, HeInit, ZeroInit, he_init_, init_targets, zero_init_


class TinyNet(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 3))

    def forward(self, x):
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))), batch_size=8)


def trainer(tmp_path, callbacks, **kwargs) -> Trainer:
    return Trainer(callbacks=callbacks, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, accelerator="cpu", **kwargs)


class WeightsAtFitStart(Callback):
    def on_fit_start(self, trainer, pl_module):
        self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_I1_I4_pretrained_layers_of_a_torchvision_backbone_are_left_alone(pkg, monkeypatch):
    import torchvision

    backbones = importlib.import_module(f"{pkg.__name__}.backbones")
    # Stands in for the download: the builder marks whatever get_model returns when weights are asked for.
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, weights=None: torchvision.models.resnet18())
    net = backbones.build_backbone("resnet18", 1, 10, 32, weights="DEFAULT")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    touched = he_init_(net)
    assert touched == ["conv1", "fc"]  # the new stem and the new classifier, nothing loaded
    assert getattr(net.layer1[0].conv1, PRETRAINED_ATTR) == "DEFAULT" and not hasattr(net.fc, PRETRAINED_ATTR)
    assert torch.equal(net.layer4[1].conv2.weight, before["layer4.1.conv2.weight"])
    assert not torch.equal(net.fc.weight, before["fc.weight"])
    assert len(init_targets(net, skip_pretrained=False)) == 21  # without the marker every conv/linear would be hit


def test_I1_I4_exclude_prefixes_and_norm_layers_are_not_touched():
    model = TinyNet()
    bn_before = model.features[1].weight.clone()
    assert zero_init_(model, exclude=["head"]) == ["features.0"]
    assert torch.count_nonzero(model.features[0].weight) == 0
    assert torch.count_nonzero(model.head[1].weight) > 0
    assert torch.equal(model.features[1].weight, bn_before)


def test_I1_I4_resume_from_a_checkpoint_does_not_reinitialize(tmp_path):
    torch.manual_seed(0)
    first = trainer(tmp_path, [HeInit(), ModelCheckpoint(dirpath=tmp_path, filename="last")], max_epochs=1)
    first.fit(TinyNet(), loader())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]

    init, probe = ZeroInit(), WeightsAtFitStart()
    resumed = trainer(tmp_path / "resumed", [init, probe], max_epochs=2)
    resumed.fit(TinyNet(), loader(), ckpt_path=tmp_path / "last.ckpt")  # no symmetry warning either: no init ran
    assert init.initialized == []
    for name, value in saved.items():
        assert torch.equal(probe.state[name], value), name


def test_I1_I4_a_model_loaded_from_a_pretrained_checkpoint_is_not_reinitialized(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    model.pretrained_source = "runs/earlier/checkpoints/best.ckpt"  # what ImageClassifier.load_pretrained records
    init, probe = ZeroInit(), WeightsAtFitStart()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="nothing is re-initialized"):
        trainer(tmp_path, [init, probe], max_steps=1).fit(model, loader())
    assert init.initialized == [] and all(torch.equal(probe.state[k], before[k]) for k in before)


def test_I1_I4_init_runs_once_per_model(tmp_path):
    torch.manual_seed(0)
    init, probe = HeInit(), WeightsAtFitStart()
    model = TinyNet()
    trainer(tmp_path, [init, probe], max_steps=2).fit(model, loader())
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    trainer(tmp_path, [init, probe], max_steps=4).fit(model, loader())  # a second fit continues training
    assert all(torch.equal(probe.state[k], trained[k]) for k in trained)


def test_I1_I4_exclude_must_be_prefixes():
    with pytest.raises(ValueError, match=r"exclude=\[''\]"):
        HeInit(exclude=[""])
