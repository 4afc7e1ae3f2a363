"""I4 on the acceptance's own net: a 30-layer plain ReLU *conv* net (no BN, no residuals).

Weight sharing makes a conv layer's effective width its channel count, so one draw of a
CPU-sized net scatters around the variance-preserving value (a random walk in log-variance over
30 layers); the geometric mean over seeds is what He init preserves, and what is checked here.
Zero padding would also shrink the signal at the borders every layer, so the variance test uses
circular padding; the training test uses the ordinary zero-padded net.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

from cnn_tricks.callbacks.init_schemes import calibrated_init_, he_init_

DEPTH, WIDTH, SEEDS = 30, 128, 6


def conv_net(in_channels: int, width: int, padding_mode: str = "zeros") -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        layers += [nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1, padding_mode=padding_mode), nn.ReLU()]
    return nn.Sequential(*layers)


@torch.no_grad()
def variance_ratios(init, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    net = conv_net(WIDTH, WIDTH, "circular")
    init(net)
    x, variances = torch.randn(16, WIDTH, 8, 8), []
    for layer in net:
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            variances.append(x.pow(2).mean())
    variances = torch.stack(variances)
    return variances / variances[0]


def test_I4_he_keeps_conv_activation_variance_within_a_factor_2_over_30_layers():
    he = torch.stack([variance_ratios(he_init_, s) for s in range(SEEDS)]).log().mean(0).exp()
    calibrated = torch.stack([variance_ratios(calibrated_init_, s) for s in range(SEEDS)]).log().mean(0).exp()
    print(f"He: per-layer variance / first layer in [{he.min():.2f}, {he.max():.2f}]; "
          f"calibrated 1/n: last layer {calibrated[-1]:.1e}")
    assert he.min() > 0.5 and he.max() < 2.0
    assert calibrated[-1] < 1e-6  # halves every layer: 2^-29


def digits_8px(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.images[:n], dtype=torch.float32).unsqueeze(1)
    return (x - x.mean()) / x.std(), torch.tensor(data.target[:n])


def epoch_losses(init, epochs: int = 4) -> list[float]:
    torch.manual_seed(0)
    net = nn.Sequential(conv_net(1, 16), nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    init(net)
    x, y = digits_8px(512)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.003, momentum=0.9)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for i in range(0, len(x), 32):
            loss = nn.functional.cross_entropy(net(x[i:i + 32]), y[i:i + 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / (len(x) / 32))
    return losses


def test_I4_the_30_layer_conv_net_trains_with_he_and_not_with_calibrated_init():
    he, calibrated = epoch_losses(he_init_), epoch_losses(calibrated_init_)
    print(f"mean loss per epoch: He {[round(v, 3) for v in he]}, calibrated {[round(v, 3) for v in calibrated]}")
    assert he[-1] < 0.95 * he[0]
    assert abs(calibrated[-1] - calibrated[0]) < 0.01  # the signal never reaches the classifier
