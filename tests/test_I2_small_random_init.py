"""I2 — small random init 0.001·N(0,1): the activation scale shrinks layer after layer (and the gradient with it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnn_tricks.callbacks.init_schemes import SmallRandomInit, calibrated_init_, small_random_init_


def stack(depth: int = 12, width: int = 100) -> nn.Sequential:
    return nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.Tanh())])


def layer_stds(model: nn.Sequential, x: torch.Tensor) -> list[float]:
    stds = []
    for layer in model:
        x = layer(x)
        if isinstance(layer, nn.Tanh):
            stds.append(x.std().item())
    return stds


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_I2_activation_std_shrinks_layer_after_layer(distribution):
    torch.manual_seed(0)
    x = torch.randn(256, 100)
    small = stack()
    small_random_init_(small, scale=0.001, distribution=distribution)
    stds = layer_stds(small, x)
    print(distribution, "small-random layer stds:", [f"{s:.1e}" for s in stds])
    assert all(later < 0.05 * earlier for earlier, later in zip(stds, stds[1:], strict=False))
    calibrated = stack()
    calibrated_init_(calibrated)
    assert layer_stds(calibrated, x)[-1] > 0.1  # the same stack keeps its signal with I3


def test_I2_gradient_signal_reaching_the_first_layer_vanishes():
    grads = {}
    for name, init in (("small", lambda m: small_random_init_(m, 0.001)), ("calibrated", calibrated_init_)):
        torch.manual_seed(0)
        model = stack(depth=6)  # deeper, and float32 underflows to an exact 0
        init(model)
        model(torch.randn(64, 100)).pow(2).sum().backward()
        grads[name] = model[0].weight.grad.norm().item()
    print("first-layer gradient norm:", grads)
    assert 0 < grads["small"] < 1e-12 * grads["calibrated"]


def test_I2_arguments_are_checked():
    with pytest.raises(ValueError, match="scale=0"):
        SmallRandomInit(scale=0)
    with pytest.raises(ValueError, match="distribution='gauss'"):
        SmallRandomInit(distribution="gauss")
