"""F6 — Randomized ReLU as Xu et al. 2015 define it: slope 1/a, a ~ U(l, u) in training, 2/(l+u) at test.

Lecture: "Randomized ReLU" (Xu et al. 2015, Empirical Evaluation of Rectified Activations in Convolutional
Network; the parameterization of the Kaggle NDSB winners, l=3, u=8).

Card:
    What: f(y) = y for y > 0 and y / a for y <= 0. In training a is drawn from U(l, u) afresh on every
        forward, one a per example and channel (Xu et al.'s a_ji: j the example, i the channel); at
        test a = (l + u) / 2, so the negative slope is exactly 2 / (l + u).
    When it helps: small data sets where the random negative slope acts as a regularizer (the paper
        reports lower test error than ReLU/Leaky ReLU on CIFAR-100 and NDSB).
    Cost: one random draw per example and channel per forward; no parameters.

Why here: `torch.nn.RReLU(lower, upper)` samples the *slope itself* from U(lower, upper) (per element)
and uses (lower + upper) / 2 at eval. Xu et al. sample the *divisor* a from U(l, u): the slope 1/a then
follows a reciprocal-uniform law, and its test slope 2/(l+u) differs from torch's mean of the bounds
(torch.nn.RReLU(1/8, 1/3) gives 0.229 at eval, Xu et al.'s l=3, u=8 give 2/11 = 0.182).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["XuRReLU"]

_SAMPLING = ("channel", "element")
Sampling = Literal["channel", "element"]


class XuRReLU(nn.Module):
    """Randomized leaky ReLU with negative slope 1/a, a ~ U(lower, upper); slope 2/(lower+upper) in eval (F6).

    Args:
        lower: l, the smallest divisor (largest training slope 1/l); Xu et al. use 3.
        upper: u, the largest divisor (smallest training slope 1/u); Xu et al. use 8.
        sample: "channel" draws one a per example and channel (Xu et al.'s a_ji), "element" one per
            input element (what torch.nn.RReLU does).

    Example:
        >>> act = XuRReLU(lower=3.0, upper=8.0).eval()
        >>> act(torch.tensor([[-11.0, 2.0]]))
        tensor([[-2.,  2.]])
    """

    def __init__(self, lower: float = 3.0, upper: float = 8.0, sample: Sampling = "channel") -> None:
        super().__init__()
        if not 0 < lower <= upper:
            raise ValueError(
                f"XuRReLU(lower={lower}, upper={upper}): need 0 < lower <= upper; Xu et al. use lower=3, upper=8."
            )
        if sample not in _SAMPLING:
            raise ValueError(f"XuRReLU(sample={sample!r}): use one of {', '.join(map(repr, _SAMPLING))}.")
        self.lower, self.upper, self.sample = float(lower), float(upper), sample

    @property
    def eval_slope(self) -> float:
        """The deterministic test-time slope 1 / ((l + u) / 2) = 2 / (l + u)."""
        return 2.0 / (self.lower + self.upper)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return torch.where(x >= 0, x, x * self.eval_slope)
        if self.sample == "element" or x.dim() < 2:
            shape = x.shape
        else:  # one divisor per (example, channel), broadcast over the spatial positions
            shape = x.shape[:2] + (1,) * (x.dim() - 2)
        divisor = torch.empty(shape, device=x.device, dtype=x.dtype).uniform_(self.lower, self.upper)
        return torch.where(x >= 0, x, x / divisor)

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}, sample={self.sample!r}, eval_slope={self.eval_slope:.4g}"
