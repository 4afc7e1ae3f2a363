"""I3/I4 extras — orthogonal init keeps every input's norm through a deep linear stack; LSUV brings
every layer's output variance to 1 on a real batch, even in a 30-layer ReLU conv net where He's
fan-in estimate drifts."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TinyClassifier, quiet_trainer, random_loader, tiny_convnet
from torch import nn

from cnn_tricks.callbacks.init_schemes import OrthogonalInit, he_init_, orthogonal_init_
from cnn_tricks.callbacks.lsuv_init import LSUVInit, lsuv_init_


def test_I4_orthogonal_weights_keep_every_norm_through_a_deep_linear_stack():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(30)])
    orthogonal_init_(model, gain=1.0)
    weight = model[0].weight
    assert torch.allclose(weight @ weight.T, torch.eye(64), atol=1e-5)
    x = torch.randn(16, 64)
    with torch.no_grad():
        assert torch.allclose(model(x).norm(dim=1), x.norm(dim=1), rtol=1e-4)


def conv_relu_net(depth: int = 30, width: int = 16) -> nn.Sequential:
    layers = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


@torch.no_grad()
def conv_output_stds(model: nn.Sequential, x: torch.Tensor) -> list[float]:
    stds = []
    for layer in model:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            stds.append(x.std().item())
    return stds


def test_I4_lsuv_gives_every_layer_unit_output_variance():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    he = conv_relu_net()
    he_init_(he)
    he_stds = conv_output_stds(he, x)
    lsuv = conv_relu_net()
    reached = lsuv_init_(lsuv, x, tolerance=0.05, max_iters=10)
    stds = conv_output_stds(lsuv, x)
    print(f"30-layer ReLU conv net (16 channels, 8x8): output std of the last layer, He {he_stds[-1]:.3f}, LSUV {stds[-1]:.3f}")
    assert len(reached) == 30
    assert all(abs(s**2 - 1.0) < 0.05 for s in stds)
    # At 16 channels and zero padding, He's fan-in estimate loses most of the signal by layer 30.
    assert he_stds[-1] < 0.5


def test_I4_lsuv_callback_takes_its_batch_from_the_training_loader():
    torch.manual_seed(0)
    data = random_loader(32, scale=7.0, batch_size=16)  # unnormalized inputs
    callback = LSUVInit()
    # LSUV runs the module's forward on the batch's images
    quiet_trainer(callbacks=[callback], max_steps=1).fit(TinyClassifier(tiny_convnet(4), lr=0.1), data)
    assert set(callback.stds) == {"net.0", "net.3"} and callback.initialized == ["net.0", "net.3"]
    assert all(math.isclose(s, 1.0, rel_tol=0.03) for s in callback.stds.values())


def test_I4_extras_arguments_are_checked():
    with pytest.raises(ValueError, match="gain=0"):
        OrthogonalInit(gain=0)
    with pytest.raises(ValueError, match="tolerance=2"):
        LSUVInit(tolerance=2)
    with pytest.raises(ValueError, match="max_iters=0"):
        LSUVInit(max_iters=0)
