"""I1 — zero init: after training steps every unit of a hidden layer is still identical; a warning names the symmetry."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnn_tricks.callbacks.init_schemes import HeInit, ZeroInit


class TinyNet(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 6, 3, padding=1), nn.Tanh(),
                                 nn.Flatten(), nn.Linear(6 * 8 * 8, 3))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def fit(callback) -> TinyNet:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,)))
    model = TinyNet()
    trainer = Trainer(max_steps=4, callbacks=[callback], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader(data, batch_size=8))
    return model


def hidden_filters(model: TinyNet) -> list[torch.Tensor]:
    return [model.net[0].weight.flatten(1), model.net[2].weight.flatten(1)]


@pytest.mark.parametrize("value", [0.0, 0.05])
def test_I1_every_filter_stays_identical_after_training_steps(value):
    with pytest.warns(UserWarning, match="symmetry is never broken"):
        model = fit(ZeroInit(value=value))
    for filters in hidden_filters(model):
        assert torch.equal(filters, filters[:1].expand_as(filters))  # every filter equals the first one
    if value:  # the weights did train (they moved off the constant), yet stayed identical
        assert not torch.allclose(model.net[0].weight, torch.full_like(model.net[0].weight, value))


def test_I1_random_init_breaks_the_symmetry():
    model = fit(HeInit())
    for filters in hidden_filters(model):
        assert (filters - filters[:1]).abs().amax(dim=1)[1:].min() > 1e-3


def test_I1_value_must_be_finite():
    with pytest.raises(ValueError, match="value=nan"):
        ZeroInit(value=float("nan"))
