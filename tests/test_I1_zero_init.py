"""I1 — zero init: after training steps every unit of a hidden layer is still identical; a warning names the symmetry."""

from __future__ import annotations

import pytest
import torch
from tiny import TinyClassifier, quiet_trainer, random_loader, tiny_convnet
from torch import nn

from cnn_tricks.callbacks.init_schemes import HeInit, ZeroInit


def fit(callback) -> TinyClassifier:
    """Four SGD steps (LR 0.5) of a two-conv tanh net on random 8x8 images, `callback` initializing it."""
    torch.manual_seed(0)
    data = random_loader(32)
    model = TinyClassifier(tiny_convnet(4, 6, act=nn.Tanh), lr=0.5)
    quiet_trainer(callbacks=[callback], max_steps=4).fit(model, data)
    return model


def hidden_filters(model: TinyClassifier) -> list[torch.Tensor]:
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
