"""I1 — All-zero (or constant) initialization: the lecture's counter-example, every unit stays identical.

Lecture: "Initialization: How about all zero initialization?" (CS231n notes): if every weight is the
same, every unit of a layer computes the same output, gets the same gradient and the same update,
so the units never become different ("symmetry is never broken").

Card:
    What: every Conv/Linear weight set to `value` (0 by default), biases to 0.
    When it helps: never for hidden layers; it is here to show why random init is needed
        (zero-initializing only a final layer can be fine, use `exclude` for the others).
    Cost: none.

Why here: `torch.nn.init.zeros_`/`constant_` do the filling; the callback adds the scope rules
(skip pretrained layers, no re-init on resume) and the warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from ._init_core import InitCallback, apply_init

__all__ = ["ZeroInit", "zero_init_"]

SYMMETRY_WARNING = (
    "ZeroInit(value={value}): every unit of a layer starts with the same weights, so all units compute the same "
    "output and get the same gradient: the symmetry is never broken and the units of each hidden layer will stay "
    "identical for the whole training. Use a random init (recipes/init/he.yaml) to train for real."
)


def zero_init_(model: nn.Module, value: float = 0.0, exclude: Sequence[str] = (), skip_pretrained: bool = True) -> list[str]:
    """Set every target Conv/Linear weight to `value` and bias to 0; returns the layer names."""
    return apply_init(model, lambda w: nn.init.constant_(w, value), exclude, skip_pretrained)


class ZeroInit(InitCallback):
    """Initialize every Conv/Linear layer to a constant (0 by default) at fit start (I1); warns.

    Args:
        value: the constant; any constant shows the same symmetry, 0 is the lecture's case.
        exclude: module-name prefixes to leave alone (e.g. `["backbone.fc"]`).
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[ZeroInit()])
    """

    def __init__(self, value: float = 0.0, exclude: Sequence[str] | None = None, skip_pretrained: bool = True) -> None:
        super().__init__(exclude, skip_pretrained)
        if not torch.isfinite(torch.tensor(float(value))):
            raise ValueError(f"ZeroInit(value={value}): use a finite constant, e.g. 0.0.")
        self.value = float(value)

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        names = zero_init_(model, self.value, self.exclude, self.skip_pretrained)
        if names:
            warnings.warn(SYMMETRY_WARNING.format(value=self.value), UserWarning, stacklevel=2)
        return names
