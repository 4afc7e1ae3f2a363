"""R3 — L1 + L2: every covered gradient gains l1·sign(w) + l2·w, and both penalties are logged."""

from __future__ import annotations

import pytest
import torch
from test_R1_l2_penalty import gradients_around, tiny_net
from tiny import quiet_trainer, random_loader

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
    model = tiny_net()
    weights = [p.detach().clone() for n, p in model.named_parameters() if n in COVERED]  # the values at the only step
    trainer = quiet_trainer(callbacks=[L1L2Penalty(l1=L1, l2=L2)], max_steps=1)
    trainer.fit(model, random_loader(8))
    logged = trainer.callback_metrics
    assert torch.isclose(logged["regularize/l1"], L1 * sum(w.abs().sum() for w in weights), rtol=1e-5)
    assert torch.isclose(logged["regularize/l2"], 0.5 * L2 * sum(w.pow(2).sum() for w in weights), rtol=1e-5)


def test_R3_both_strengths_are_needed():
    with pytest.raises(ValueError, match="l1=0, l2=0.0005"):
        L1L2Penalty(l1=0, l2=5e-4)
