"""R2 — L1 penalty: every covered gradient gains exactly λ·sign(w), and after training the fraction
of near-zero weights is larger than in the same run without it."""

from __future__ import annotations

import pytest
import torch
from test_R1_l2_penalty import gradients_around
from tiny import TinyClassifier, digits_data, loader, quiet_trainer, tiny_mlp

from cnn_tricks.callbacks.weight_penalties import L1Penalty

LAMBDA = 0.01


def test_R2_gradient_gains_exactly_lambda_sign_w():
    before, after = gradients_around(L1Penalty(weight=LAMBDA))
    for name, grad in before.grads.items():
        gained = after.grads[name] - grad
        expected = LAMBDA * before.weights[name].sign() if name in {"net.0.weight", "net.4.weight"} else torch.zeros_like(grad)
        assert torch.allclose(gained, expected, atol=1e-7), name


def near_zero_fraction(callbacks) -> float:
    torch.manual_seed(0)
    x, y = digits_data()
    model = TinyClassifier(tiny_mlp(64, 64, 10), lr=0.1)
    quiet_trainer(callbacks=callbacks, max_epochs=8).fit(model, loader(x / 16.0, y, batch_size=64))
    weights = torch.cat([model.net[0].weight.flatten(), model.net[2].weight.flatten()])
    return (weights.abs() < 1e-3).float().mean().item()  # SGD leaves L1 weights within lr·λ = 1e-4 of zero


def test_R2_weights_get_sparser_than_without_l1():
    plain, sparse = near_zero_fraction([]), near_zero_fraction([L1Penalty(weight=1e-3)])
    print(f"fraction of |w| < 1e-3 after 8 epochs on digits: without L1 {plain:.3f}, with L1 (λ=1e-3) {sparse:.3f}")
    assert sparse > 5 * plain and sparse > 0.05


def test_R2_weight_must_be_positive():
    with pytest.raises(ValueError, match="weight=-1"):
        L1Penalty(weight=-1)
