"""I4 — He initialization: weight variance 2/n (n = fan-in), for ReLU nets.

Lecture: "They reached the conclusion that the variance of neurons in the network should be 2.0/n"
(He et al. 2015, Delving Deep into Rectifiers): ReLU zeroes half of its inputs, so the weights
need twice the calibrated variance to keep the activation scale from layer to layer; a 30-layer
plain ReLU net converges with it and stalls with the 1/n ("Xavier") init.

Card:
    What: every Conv/Linear weight drawn from N(0, 2/fan_in) (or the uniform with the same
        variance; fan_out mode keeps the backward signal instead), biases 0.
    When it helps: deep ReLU-family nets without (or before) BatchNorm.
    Cost: none.

Why here: it is `torch.nn.init.kaiming_normal_/kaiming_uniform_`; the callback adds the scope
rules (skip pretrained layers, no re-init on resume). torch's own default for Conv/Linear is a
uniform with variance 1/(3·fan_in), a third of the calibrated one, not He.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from ._init_core import InitCallback, apply_init

__all__ = ["HeInit", "he_init_"]

MODES = ("fan_in", "fan_out")
DISTRIBUTIONS = ("normal", "uniform")
Mode = Literal["fan_in", "fan_out"]
Distribution = Literal["normal", "uniform"]


def he_init_(
    model: nn.Module,
    mode: Mode = "fan_in",
    distribution: Distribution = "normal",
    negative_slope: float = 0.0,
    exclude: Sequence[str] = (),
    skip_pretrained: bool = True,
) -> list[str]:
    """Draw every target weight with variance 2/((1 + a²)·n); biases 0. Returns the layer names."""
    nonlinearity = "relu" if negative_slope == 0 else "leaky_relu"
    fill = nn.init.kaiming_normal_ if distribution == "normal" else nn.init.kaiming_uniform_
    return apply_init(model, lambda w: fill(w, a=negative_slope, mode=mode, nonlinearity=nonlinearity), exclude, skip_pretrained)


class HeInit(InitCallback):
    """Initialize every Conv/Linear layer with He's sqrt(2/fan_in) scale at fit start (I4).

    Args:
        mode: "fan_in" (keeps the forward activations' variance, the lecture's n) or "fan_out".
        distribution: "normal" or "uniform" (same variance).
        negative_slope: the Leaky ReLU/PReLU slope a; the variance becomes 2/((1 + a²)·n).
        exclude: module-name prefixes to leave alone.
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[HeInit()])
    """

    def __init__(
        self,
        mode: Mode = "fan_in",
        distribution: Distribution = "normal",
        negative_slope: float = 0.0,
        exclude: Sequence[str] | None = None,
        skip_pretrained: bool = True,
    ) -> None:
        super().__init__(exclude, skip_pretrained)
        if mode not in MODES:
            raise ValueError(f"HeInit(mode={mode!r}): choose one of {', '.join(MODES)}.")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"HeInit(distribution={distribution!r}): choose one of {', '.join(DISTRIBUTIONS)}.")
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"HeInit(negative_slope={negative_slope}): use the activation's slope in [0, 1), 0 for ReLU.")
        self.mode = mode
        self.distribution = distribution
        self.negative_slope = negative_slope

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        return he_init_(model, self.mode, self.distribution, self.negative_slope, self.exclude, self.skip_pretrained)
