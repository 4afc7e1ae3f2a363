"""I3/I4 extra — Orthogonal initialization: each layer's weight matrix a (scaled) orthogonal one.

Saxe et al. 2014 (Exact solutions to the nonlinear dynamics of learning in deep linear networks):
an orthogonal matrix keeps every direction's norm, not only the average variance, so a deep
linear stack neither shrinks nor blows up any input; a gain of sqrt(2) does the same for ReLU.

Card:
    What: every Conv/Linear weight, flattened to (out, in·kh·kw), set to gain × a random
        (semi-)orthogonal matrix; biases 0.
    When it helps: very deep or recurrent-like stacks without normalization; LSUV starts from it.
    Cost: one QR decomposition per layer, once.

Why here: it is `torch.nn.init.orthogonal_`; the callback adds the scope rules (skip pretrained
layers, no re-init on resume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from ._init_core import InitCallback, apply_init

__all__ = ["OrthogonalInit", "orthogonal_init_"]


def orthogonal_init_(model: nn.Module, gain: float = 1.0, exclude: Sequence[str] = (), skip_pretrained: bool = True) -> list[str]:
    """Set every target weight to gain × a random (semi-)orthogonal matrix; biases 0. Returns the layer names."""
    return apply_init(model, lambda w: nn.init.orthogonal_(w, gain=gain), exclude, skip_pretrained)


class OrthogonalInit(InitCallback):
    """Initialize every Conv/Linear layer with a scaled random orthogonal matrix at fit start.

    Args:
        gain: 1.0 for linear/tanh stacks, sqrt(2) ≈ 1.414 for ReLU.
        exclude: module-name prefixes to leave alone.
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[OrthogonalInit(gain=1.414)])
    """

    def __init__(self, gain: float = math.sqrt(2.0), exclude: Sequence[str] | None = None, skip_pretrained: bool = True) -> None:
        super().__init__(exclude, skip_pretrained)
        if not gain > 0:
            raise ValueError(f"OrthogonalInit(gain={gain}): use a positive gain, 1.0 (linear/tanh) or 1.414 (ReLU).")
        self.gain = gain

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        return orthogonal_init_(model, self.gain, self.exclude, self.skip_pretrained)
