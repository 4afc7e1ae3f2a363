"""I1-I4 — which layers an init callback touches, and when: never pretrained layers, never on
resume from a checkpoint, never excluded prefixes, once per model."""

from __future__ import annotations

import importlib
from functools import partial

import pytest
import torch
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ModelCheckpoint
from tiny import TinyClassifier, quiet_trainer, random_loader
from torch import nn

from cnn_tricks.callbacks.init_schemes import PRETRAINED_ATTR, HeInit, ZeroInit, he_init_, init_targets, zero_init_


def tiny_net() -> TinyClassifier:
    """A one-conv BatchNorm net in two named parts: the tests exclude and look up layers by these prefixes."""
    return TinyClassifier({"features": nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
                           "head": nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 3))}, lr=0.1)


trainer = partial(quiet_trainer, enable_checkpointing=True)  # Lightning's default checkpointing, as in a real run


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
    model = tiny_net()
    bn_before = model.features[1].weight.clone()
    assert zero_init_(model, exclude=["head"]) == ["features.0"]
    assert torch.count_nonzero(model.features[0].weight) == 0
    assert torch.count_nonzero(model.head[1].weight) > 0
    assert torch.equal(model.features[1].weight, bn_before)


def test_I1_I4_resume_from_a_checkpoint_does_not_reinitialize(tmp_path):
    torch.manual_seed(0)
    first = trainer(tmp_path, [HeInit(), ModelCheckpoint(dirpath=tmp_path, filename="last")], max_epochs=1)
    first.fit(tiny_net(), random_loader(16))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]

    init, probe = ZeroInit(), WeightsAtFitStart()
    resumed = trainer(tmp_path / "resumed", [init, probe], max_epochs=2)
    resumed.fit(tiny_net(), random_loader(16), ckpt_path=tmp_path / "last.ckpt")  # no symmetry warning either: no init ran
    assert init.initialized == []
    for name, value in saved.items():
        assert torch.equal(probe.state[name], value), name


def test_I1_I4_a_model_loaded_from_a_pretrained_checkpoint_is_not_reinitialized(tmp_path):
    torch.manual_seed(0)
    model = tiny_net()
    model.pretrained_source = "runs/earlier/checkpoints/best.ckpt"  # what ImageClassifier.load_pretrained records
    init, probe = ZeroInit(), WeightsAtFitStart()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="nothing is re-initialized"):
        trainer(tmp_path, [init, probe], max_steps=1).fit(model, random_loader(16))
    assert init.initialized == [] and all(torch.equal(probe.state[k], before[k]) for k in before)


def test_I1_I4_init_runs_once_per_model(tmp_path):
    torch.manual_seed(0)
    init, probe = HeInit(), WeightsAtFitStart()
    model = tiny_net()
    trainer(tmp_path, [init, probe], max_steps=2).fit(model, random_loader(16))
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    trainer(tmp_path, [init, probe], max_steps=4).fit(model, random_loader(16))  # a second fit continues training
    assert all(torch.equal(probe.state[k], trained[k]) for k in trained)


def test_I1_I4_exclude_must_be_prefixes():
    with pytest.raises(ValueError, match=r"exclude=\[''\]"):
        HeInit(exclude=[""])
