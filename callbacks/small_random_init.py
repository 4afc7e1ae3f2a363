"""I2 — Small random numbers: w = 0.001·N(0, 1) (or uniform); the signal shrinks layer after layer.

Lecture: "We still want the weights to be very close to 0 ... Warning! Small numbers will diminish the
'gradient signal' flowing backward through a network" (CS231n notes).

Card:
    What: every Conv/Linear weight drawn from scale·N(0, 1) (or U(-scale, scale)), biases 0.
    When it helps: shallow nets; in a deep net each layer multiplies the activation (and gradient)
        scale by about scale·sqrt(fan_in), so both vanish with depth (the test shows it).
    Cost: none.

Why here: `torch.nn.init.normal_`/`uniform_` draw the numbers; the callback adds the scope rules
(skip pretrained layers, no re-init on resume).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from ._init_core import InitCallback, apply_init

__all__ = ["SmallRandomInit", "small_random_init_"]

DISTRIBUTIONS = ("normal", "uniform")
Distribution = Literal["normal", "uniform"]


def small_random_init_(
    model: nn.Module,
    scale: float = 0.001,
    distribution: Distribution = "normal",
    exclude: Sequence[str] = (),
    skip_pretrained: bool = True,
) -> list[str]:
    """Draw every target weight from scale·N(0, 1) or U(-scale, scale); biases 0. Returns the layer names."""
    if distribution == "normal":
        return apply_init(model, lambda w: nn.init.normal_(w, 0.0, scale), exclude, skip_pretrained)
    return apply_init(model, lambda w: nn.init.uniform_(w, -scale, scale), exclude, skip_pretrained)


class SmallRandomInit(InitCallback):
    """Initialize every Conv/Linear layer with small random numbers at fit start (I2).

    Args:
        scale: 0.001 in the lecture; the std of the normal, or the half-width of the uniform.
        distribution: "normal" or "uniform".
        exclude: module-name prefixes to leave alone.
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[SmallRandomInit(scale=0.001)])
    """

    def __init__(
        self,
        scale: float = 0.001,
        distribution: Distribution = "normal",
        exclude: Sequence[str] | None = None,
        skip_pretrained: bool = True,
    ) -> None:
        super().__init__(exclude, skip_pretrained)
        if not scale > 0:
            raise ValueError(f"SmallRandomInit(scale={scale}): use a positive scale, e.g. 0.001.")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"SmallRandomInit(distribution={distribution!r}): choose one of {', '.join(DISTRIBUTIONS)}.")
        self.scale = scale
        self.distribution = distribution

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        return small_random_init_(model, self.scale, self.distribution, self.exclude, self.skip_pretrained)
