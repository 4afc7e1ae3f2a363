"""I4 — He init sqrt(2/fan_in): a 30-layer plain ReLU net keeps its activation variance and trains;
with the calibrated 1/fan_in init (I3) the same net's signal halves every layer and it does not train."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnn_tricks.callbacks.init_schemes import CalibratedInit, HeInit, calibrated_init_, he_init_

DEPTH = 30


def digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.images[:n], dtype=torch.float32).reshape(n, 64)
    return (x - x.mean(0)) / (x.std(0) + 1.0), torch.tensor(data.target[:n])


def plain_relu_net(width: int) -> nn.Sequential:
    """DEPTH Linear+ReLU layers, no BatchNorm, no residuals, then the classifier."""
    layers = [nn.Linear(64, width), nn.ReLU()]
    for _ in range(DEPTH - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


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


class Classifier(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = plain_relu_net(128)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.002, momentum=0.9)


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
    trainer = Trainer(max_epochs=4, callbacks=[init, probe], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Classifier(), DataLoader(TensorDataset(x, y), batch_size=64))
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
