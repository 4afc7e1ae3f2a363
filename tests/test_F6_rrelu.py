"""F6 — Xu et al.'s RReLU (XuRReLU): random slopes 1/a, a ~ U(l, u), in training (within [1/u, 1/l]); exactly 2/(l+u) in eval."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnn_tricks.callbacks.activation_swap import ActivationSwap
from cnn_tricks.layers.xu_rrelu import XuRReLU

L, U = 3.0, 8.0


def test_F6_training_slopes_are_random_within_1_over_u_and_1_over_l():
    torch.manual_seed(0)
    act = XuRReLU(L, U).train()
    x = -torch.rand(512, 16, 4, 4) - 0.5  # all negative
    slopes = act(x) / x
    assert slopes.min() >= 1 / U - 1e-6 and slopes.max() <= 1 / L + 1e-6
    per_channel = slopes[:, :, 0, 0]
    assert torch.allclose(slopes, per_channel[:, :, None, None].expand_as(slopes))  # one a per example and channel
    assert per_channel.std() > 0.03 and per_channel.unique().numel() > 8000  # random, not one slope
    assert not torch.equal(act(x), act(x))  # re-drawn on every forward
    # Xu et al.'s law: slope = 1/a with a ~ U(l, u), mean ln(u/l)/(u-l) = 0.196; torch.nn.RReLU(1/u, 1/l) would
    # draw the slope itself uniformly, mean (1/u + 1/l)/2 = 0.229.
    print(f"mean training slope {per_channel.mean():.4f}, Xu et al. law {math.log(U / L) / (U - L):.4f}")
    assert per_channel.mean().item() == pytest.approx(math.log(U / L) / (U - L), abs=0.003)
    positive = torch.rand(4, 3)
    assert torch.equal(act(positive), positive)


def test_F6_eval_slope_is_exactly_2_over_l_plus_u_and_differs_from_torch_rrelu():
    act = XuRReLU(L, U).eval()
    x = torch.tensor([-11.0, -5.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    assert act(x).tolist() == [-2.0, -1.0, -2.0 / 11.0, 0.0, 2.0]  # slope 2/(3+8) = 2/11, to the last bit
    assert torch.equal(act(x), act(x))  # deterministic
    torch_rrelu = nn.RReLU(1 / U, 1 / L).eval()
    assert -torch_rrelu(torch.tensor([-1.0])).item() == pytest.approx((1 / U + 1 / L) / 2)  # 0.229, not 2/11
    assert act.eval_slope == 2 / (L + U) != pytest.approx((1 / U + 1 / L) / 2)


def test_F6_element_sampling_draws_one_slope_per_element():
    torch.manual_seed(0)
    x = -torch.ones(2, 3, 4, 4)
    slopes = -XuRReLU(L, U, sample="element").train()(x)
    assert slopes.unique().numel() == x.numel()
    assert slopes.min() >= 1 / U - 1e-6 and slopes.max() <= 1 / L + 1e-6


def test_F6_swapped_backbone_is_random_in_training_and_deterministic_in_eval(pkg):
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=8, backbone_options={"widths": [8]})
    ActivationSwap("rrelu", rrelu_lower=L, rrelu_upper=U).setup(None, model, "fit")
    acts = [m for m in model.modules() if isinstance(m, XuRReLU)]
    assert len(acts) == 2 and all((a.lower, a.upper) == (L, U) for a in acts)
    x = torch.randn(4, 1, 8, 8)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_F6_bounds_are_validated():
    with pytest.raises(ValueError, match=r"lower=0, upper=8"):
        XuRReLU(0, 8)
    with pytest.raises(ValueError, match=r"lower=8, upper=3"):
        XuRReLU(8, 3)
    with pytest.raises(ValueError, match="sample='pixel'"):
        XuRReLU(sample="pixel")
