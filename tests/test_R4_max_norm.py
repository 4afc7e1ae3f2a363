"""R4 — max-norm: after every optimizer step every unit's incoming weight norm is <= c."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import Callback
from tiny import TinyClassifier, quiet_trainer, random_loader, tiny_convnet
from torch import nn

from cnn_tricks.callbacks.max_norm import MaxNorm, apply_max_norm


class NormProbe(Callback):
    """Records the largest unit norm seen right after each optimizer step."""

    def __init__(self) -> None:
        self.max_norms = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        norms = [m.weight.flatten(1).norm(dim=1).max().item() for m in pl_module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.max_norms.append(max(norms))


def fit(callbacks) -> NormProbe:
    torch.manual_seed(0)
    data = random_loader(64, scale=5)
    probe = NormProbe()
    quiet_trainer(callbacks=[*callbacks, probe], max_epochs=2).fit(TinyClassifier(tiny_convnet(4), lr=2.0), data)
    return probe


def test_R4_every_unit_norm_stays_below_c_after_every_step():
    constrained = fit([MaxNorm(max_norm=0.5)])
    unconstrained = fit([])
    assert len(constrained.max_norms) == 16
    assert max(constrained.max_norms) <= 0.5 + 1e-5
    assert max(unconstrained.max_norms) > 1.0  # the same run without the callback breaks the bound


def test_R4_small_units_are_left_alone_and_direction_is_kept():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.1, 0.0, 0.0]]))
    assert apply_max_norm(layer, max_norm=1.0) == 1
    assert torch.allclose(layer.weight, torch.tensor([[0.6, 0.8, 0.0], [0.1, 0.0, 0.0]]))


def test_R4_bound_must_be_positive():
    with pytest.raises(ValueError, match="max_norm=0"):
        MaxNorm(max_norm=0)
