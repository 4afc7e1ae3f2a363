"""I3 — calibrated init randn/sqrt(fan_in): output variance roughly constant across the layers of a linear/tanh stack."""

from __future__ import annotations

import torch
from torch import nn

from cnn_tricks.callbacks.init_schemes import calibrated_init_


def stack(activation, depth: int = 10, width: int = 256) -> nn.Sequential:
    return nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), activation())])


def layer_variances(model: nn.Sequential, x: torch.Tensor) -> list[float]:
    variances = []
    for layer in model:
        x = layer(x)
        if isinstance(layer, nn.Linear):
            variances.append(x.var().item())
    return variances


def test_I3_linear_stack_keeps_its_output_variance():
    torch.manual_seed(0)
    x = torch.randn(512, 256)
    model = stack(nn.Identity)
    calibrated_init_(model)
    variances = layer_variances(model, x)
    ratios = [v / variances[0] for v in variances]
    print("calibrated linear stack, variance / first layer's:", [f"{r:.2f}" for r in ratios])
    assert all(0.8 < r < 1.25 for r in ratios)
    with torch.no_grad():  # the same stack with plain randn weights: variance grows by fan_in per layer
        for layer in model[::2]:
            layer.weight.normal_()
    plain = layer_variances(model, x)
    assert plain[-1] > 1e15 * plain[0]


def test_I3_tanh_stack_keeps_its_scale_from_layer_to_layer():
    torch.manual_seed(0)
    x = torch.randn(512, 256)
    model = stack(nn.Tanh)
    calibrated_init_(model)
    variances = layer_variances(model, x)
    steps = [later / earlier for earlier, later in zip(variances[1:], variances[2:], strict=False)]
    print("calibrated tanh stack, layer-to-layer variance ratio:", [f"{s:.2f}" for s in steps])
    # No exponential collapse: each layer keeps most of the previous one's variance (tanh only
    # slowly contracts); with 0.001·N(0,1) each step would be about 1e-4 (see test_I2).
    assert min(steps) > 0.6


def test_I3_weight_std_is_one_over_sqrt_fan_in():
    conv = nn.Conv2d(64, 128, 3)
    calibrated_init_(conv)
    fan_in = 64 * 9
    assert abs(conv.weight.std().item() * fan_in**0.5 - 1.0) < 0.02
    assert torch.count_nonzero(conv.bias) == 0
