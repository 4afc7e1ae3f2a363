"""R3 — L1 + L2: every covered gradient gains l1·sign(w) + l2·w, and both penalties are logged."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import Trainer
from test_R1_l2_penalty import TinyNet, gradients_around
from torch.utils.data import DataLoader, TensorDataset

from cnn_tricks.callbacks.weight_penalties import L1L2Penalty

L1, L2 = 0.01, 0.02
COVERED = {"net.0.weight", "net.4.weight"}


def test_R3_gradient_gains_both_terms():
    before, after = gradients_around(L1L2Penalty(l1=L1, l2=L2))
    for name, grad in before.grads.items():
        w = before.weights[name]
        expected = L1 * w.sign() + L2 * w if name in COVERED else torch.zeros_like(grad)
        assert torch.allclose(after.grads[name] - grad, expected, atol=1e-7), name


def test_R3_both_penalty_values_are_logged():
    torch.manual_seed(0)
    model = TinyNet()
    weights = [p.detach().clone() for n, p in model.named_parameters() if n in COVERED]  # the values at the only step
    trainer = Trainer(max_steps=1, callbacks=[L1L2Penalty(l1=L1, l2=L2)], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))), batch_size=8))
    logged = trainer.callback_metrics
    assert torch.isclose(logged["regularize/l1"], L1 * sum(w.abs().sum() for w in weights), rtol=1e-5)
    assert torch.isclose(logged["regularize/l2"], 0.5 * L2 * sum(w.pow(2).sum() for w in weights), rtol=1e-5)


def test_R3_both_strengths_are_needed():
    with pytest.raises(ValueError, match="l1=0, l2=0.0005"):
        L1L2Penalty(l1=0, l2=5e-4)
