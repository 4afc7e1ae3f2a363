"""I4 — He init sqrt(2/fan_in): a 30-layer plain ReLU net keeps its activation variance and trains;
with the calibrated 1/fan_in init (I3) the same net's signal halves every layer and it does not train."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import Callback
from tiny import TinyClassifier, digits_data, loader, quiet_trainer, tiny_mlp
from torch import nn

from cnn_tricks.callbacks.init_schemes import CalibratedInit, HeInit, calibrated_init_, he_init_

DEPTH = 30


def digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_data(n)
    return (x - x.mean(0)) / (x.std(0) + 1.0), y


def plain_relu_net(width: int) -> nn.Sequential:
    """DEPTH Linear+ReLU layers, no BatchNorm, no residuals, then the classifier."""
    return tiny_mlp(64, *[width] * DEPTH, 10)


@torch.no_grad()
def variance_ratios(model: nn.Sequential, x: torch.Tensor) -> list[float]:
    """Pre-activation variance of each hidden layer over the first one's."""
    variances = []
    for layer in list(model)[:-1]:
        x = layer(x)
        if isinstance(layer, nn.Linear):
            variances.append(x.var().item())
    return [v / variances[0] for v in variances]


def test_I4_activation_variance_of_a_30_layer_relu_net_stays_within_a_factor_2():
    x, _ = digits(128)
    torch.manual_seed(0)
    he = plain_relu_net(1024)  # wide: at finite width the variance drifts (about sqrt(depth / width) in log)
    he_init_(he)
    ratios = variance_ratios(he, x)
    print(f"He: variance / first layer's over {DEPTH} layers: min {min(ratios):.2f}, max {max(ratios):.2f}")
    assert len(ratios) == DEPTH and all(0.5 <= r <= 2.0 for r in ratios)
    calibrated_init_(he)
    collapsed = variance_ratios(he, x)[-1]
    print(f"calibrated 1/fan_in: last layer's variance / first's = {collapsed:.1e} (about 2^-29)")
    assert collapsed < 1e-6


class EpochLoss(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.epochs: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append(sum(self.losses) / len(self.losses))
        self.losses.clear()


def train(init) -> list[float]:
    torch.manual_seed(0)
    x, y = digits(512)
    probe = EpochLoss()
    trainer = quiet_trainer(callbacks=[init, probe], max_epochs=4)
    trainer.fit(TinyClassifier(plain_relu_net(128), lr=0.002, momentum=0.9), loader(x, y, batch_size=64))
    return probe.epochs


def test_I4_the_30_layer_relu_net_trains_with_he_and_not_with_calibrated_init():
    he, calibrated = train(HeInit()), train(CalibratedInit())
    print("mean training loss per epoch, He:", [f"{v:.3f}" for v in he], "calibrated:", [f"{v:.3f}" for v in calibrated])
    assert he[-1] < he[0] - 0.25  # ln(10) = 2.303 at chance
    assert min(calibrated) > 2.29  # stuck at chance: the signal is 2^-29 of the input's


def test_I4_arguments_are_checked():
    with pytest.raises(ValueError, match="mode='fan'"):
        HeInit(mode="fan")
    with pytest.raises(ValueError, match="negative_slope=1.5"):
        HeInit(negative_slope=1.5)
