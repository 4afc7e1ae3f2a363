"""F5 — PReLU: one learned slope per channel (and per call site in ResNets), changed by the optimizer's steps."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from pytorch_lightning import Callback
from tiny import digits_data, loader, quiet_trainer
from torch import nn
from torch.utils.data import DataLoader

from cnn_tricks.callbacks.activation_swap import ActivationSwap
from cnn_tricks.layers.activation_surgery import CallSiteActivations, swap_activations
from cnn_tricks.layers.activations import activation_factory


def prelu_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """(slopes, input channels) of every PReLU call in one forward."""
    seen = []
    handles = [m.register_forward_pre_hook(lambda m, a: seen.append((m.weight.numel(), a[0].shape[1])))
               for m in model.modules() if isinstance(m, nn.PReLU)]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return seen


def test_F5_one_slope_per_channel_in_every_bottleneck_call_site(one_thread):
    # A torchvision Bottleneck calls its one ReLU three times, on 16, 16 and 64 channels:
    # a single per-channel PReLU cannot serve them all, so each call site gets its own.
    block = torchvision.models.resnet.Bottleneck(inplanes=64, planes=16)
    x = torch.randn(2, 64, 4, 4)
    assert swap_activations(block, activation_factory("prelu"), x[:1]) == 1
    assert isinstance(block.relu, CallSiteActivations)
    assert prelu_inputs(block, x) == [(16, 16), (16, 16), (64, 64)]
    for _ in range(2):  # the call order holds forward after forward
        assert [n for n, _ in prelu_inputs(block, x)] == [16, 16, 64]


def test_F5_one_slope_per_channel_in_the_sized_convnet_and_resnet18(pkg, one_thread):
    for backbone in ("sized_convnet", "resnet18"):
        model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=8, backbone=backbone,
                                    backbone_options={"widths": [8, 16]} if backbone == "sized_convnet" else {})
        ActivationSwap("prelu").setup(None, model, "fit")
        calls = prelu_inputs(model, torch.randn(2, 1, 8, 8))
        assert len(calls) == (4 if backbone == "sized_convnet" else 17)  # every call site
        assert all(slopes == channels for slopes, channels in calls), calls
        slopes = [m.weight for m in model.modules() if isinstance(m, nn.PReLU)]
        assert len({id(w) for w in slopes}) == len(calls)  # each call site its own slopes
        assert all(torch.all(w == 0.25) for w in slopes)


class SlopeProbe(Callback):
    """Checks at fit start that the optimizer holds the PReLU slopes, and records them before training."""

    def on_train_start(self, trainer, pl_module):
        self.slopes = [m.weight for m in pl_module.modules() if isinstance(m, nn.PReLU)]
        optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        self.all_optimized = all(id(w) in optimized for w in self.slopes)
        self.before = [w.detach().clone() for w in self.slopes]


def digits_loader() -> DataLoader:
    images, labels = digits_data(128)
    return loader(images.view(-1, 1, 8, 8) / 16.0, labels, batch_size=32)


def test_F5_slopes_are_trained_by_the_optimizer_through_trainer_fit_and_reloaded(pkg, tmp_path, one_thread):
    torch.manual_seed(0)
    options = {"widths": [8, 16], "convs_per_stage": 1}
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=8, backbone_options=options)
    probe = SlopeProbe()
    trainer = quiet_trainer(callbacks=[ActivationSwap("prelu"), probe], max_steps=4)
    trainer.fit(model, train_dataloaders=digits_loader())
    assert probe.all_optimized and len(probe.slopes) == 2  # swapped in setup, before configure_optimizers
    optimizer = trainer.optimizers[0]
    assert all("momentum_buffer" in optimizer.state[w] for w in probe.slopes)  # SGD momentum on the slopes
    changes = [(w.detach() - b).abs() for w, b in zip(probe.slopes, probe.before, strict=True)]
    print("PReLU slope change after 4 steps (max per layer):", [f"{c.max():.2e}" for c in changes])
    assert all((c > 0).float().mean() > 0.9 for c in changes)  # nearly every channel's slope moved
    trained = copy.deepcopy([w.detach() for w in probe.slopes])

    # `test --ckpt_path` on a fresh module: the swap (setup) comes before the checkpoint is loaded.
    path = tmp_path / "prelu.ckpt"
    trainer.save_checkpoint(path)
    fresh = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=8, backbone_options=options)
    tester = quiet_trainer(callbacks=[ActivationSwap("prelu")])
    tester.test(fresh, dataloaders=digits_loader(), ckpt_path=str(path), verbose=False)
    reloaded = [m.weight.detach() for m in fresh.modules() if isinstance(m, nn.PReLU)]
    assert all(torch.equal(a, b) for a, b in zip(reloaded, trained, strict=True)) and len(reloaded) == 2


def test_F5_channels_without_a_probe_come_from_the_layer_before_or_the_swap_refuses():
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6, 3), nn.ReLU())
    assert swap_activations(net, activation_factory("prelu")) == 2  # no example input: module order
    assert [m.weight.numel() for m in net.modules() if isinstance(m, nn.PReLU)] == [6, 3]
    first = nn.Sequential(nn.ReLU(), nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ValueError, match=r"channel count of 0 \(ReLU\).*pass example_input"):
        swap_activations(first, activation_factory("prelu"))
    assert [type(m) for m in first] == [nn.ReLU, nn.Linear, nn.ReLU]  # nothing half-swapped
    assert swap_activations(first, activation_factory("prelu"), example_input=torch.zeros(1, 4)) == 2
