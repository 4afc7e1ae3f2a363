"""R2 — L1 penalty: every covered gradient gains exactly λ·sign(w), and after training the fraction
of near-zero weights is larger than in the same run without it."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import LightningModule, Trainer
from sklearn.datasets import load_digits
from test_R1_l2_penalty import gradients_around
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnn_tricks.callbacks.weight_penalties import L1Penalty

LAMBDA = 0.01


def test_R2_gradient_gains_exactly_lambda_sign_w():
    before, after = gradients_around(L1Penalty(weight=LAMBDA))
    for name, grad in before.grads.items():
        gained = after.grads[name] - grad
        expected = LAMBDA * before.weights[name].sign() if name in {"net.0.weight", "net.4.weight"} else torch.zeros_like(grad)
        assert torch.allclose(gained, expected, atol=1e-7), name


class DigitsMLP(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def near_zero_fraction(callbacks) -> float:
    torch.manual_seed(0)
    digits = load_digits()
    data = TensorDataset(torch.tensor(digits.images, dtype=torch.float32).reshape(-1, 64) / 16.0, torch.tensor(digits.target))
    model = DigitsMLP()
    trainer = Trainer(max_epochs=8, callbacks=callbacks, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader(data, batch_size=64))
    weights = torch.cat([model.net[0].weight.flatten(), model.net[2].weight.flatten()])
    return (weights.abs() < 1e-3).float().mean().item()  # SGD leaves L1 weights within lr·λ = 1e-4 of zero


def test_R2_weights_get_sparser_than_without_l1():
    plain, sparse = near_zero_fraction([]), near_zero_fraction([L1Penalty(weight=1e-3)])
    print(f"fraction of |w| < 1e-3 after 8 epochs on digits: without L1 {plain:.3f}, with L1 (λ=1e-3) {sparse:.3f}")
    assert sparse > 5 * plain and sparse > 0.05


def test_R2_weight_must_be_positive():
    with pytest.raises(ValueError, match="weight=-1"):
        L1Penalty(weight=-1)
