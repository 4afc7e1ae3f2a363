"""I3 — Calibrated variances: w = randn(n) / sqrt(n), n = fan-in; output variance stays put.

Lecture: "Calibrating the variances with 1/sqrt(n)" (CS231n notes; LeCun et al. 1998, the "Xavier"
fan-in form of Glorot & Bengio 2010): a unit's output variance grows with its number of inputs,
so dividing by sqrt(fan_in) keeps it equal to the input variance in a linear (or tanh) stack.

Card:
    What: every Conv/Linear weight drawn from N(0, 1/fan_in) (fan_in = in_channels·kh·kw), biases 0.
    When it helps: linear, tanh and sigmoid nets. With ReLU each layer halves the variance; use He
        init (I4) there (the I4 test shows a 30-layer ReLU net that does not train with this one).
    Cost: none.

Why here: it is `torch.nn.init.kaiming_normal_(w, nonlinearity="linear")` (gain 1); the callback
adds the scope rules (skip pretrained layers, no re-init on resume).
"""

from __future__ import annotations

from collections.abc import Sequence

from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from ._init_core import InitCallback, apply_init

__all__ = ["CalibratedInit", "calibrated_init_"]


def calibrated_init_(model: nn.Module, exclude: Sequence[str] = (), skip_pretrained: bool = True) -> list[str]:
    """Draw every target weight from N(0, 1/fan_in); biases 0. Returns the layer names."""
    return apply_init(model, lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="linear"), exclude, skip_pretrained)


class CalibratedInit(InitCallback):
    """Initialize every Conv/Linear layer with randn/sqrt(fan_in) at fit start (I3).

    Args:
        exclude: module-name prefixes to leave alone.
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[CalibratedInit()])
    """

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        return calibrated_init_(model, self.exclude, self.skip_pretrained)
