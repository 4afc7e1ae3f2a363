"""R4 — Max-norm constraint: every unit's incoming weight vector kept at L2 norm <= c.

Lecture: "Regularization: Max norm constraints" (Srivastava et al. 2014, Dropout, section 5.1).

Card:
    What: after every optimizer step, each output unit's incoming weights (a row of a Linear
        weight, one filter of a Conv) whose L2 norm exceeds `max_norm` is scaled back to it.
    When it helps: with high learning rates and dropout (the paper's best MNIST result is
        dropout + max-norm, 1.05% error); it bounds weights without shrinking small ones.
    Cost: one norm per unit per step, about one extra pass over the parameters.

Why here: neither Lightning nor torch has it; `torch.nn.utils.clip_grad_norm_` bounds gradients,
and `nn.Embedding(max_norm=...)` only embeddings.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import nn
from typing_extensions import override

__all__ = ["MaxNorm", "apply_max_norm"]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float, skip_last: bool = False) -> int:
    """Rescale each unit's incoming weight vector of every Linear/Conv layer to norm <= max_norm.

    Returns the number of units that were rescaled.
    """
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
    if skip_last and layers:
        layers = layers[:-1]
    clipped = 0
    for layer in layers:
        rows = layer.weight.view(layer.weight.shape[0], -1)
        norms = rows.norm(dim=1, keepdim=True)
        too_big = norms > max_norm
        clipped += int(too_big.sum())
        rows.mul_(torch.where(too_big, max_norm / norms.clamp_min(1e-12), torch.ones_like(norms)))
    return clipped


class MaxNorm(Callback):
    """Keep each unit's incoming weight norm <= `max_norm` after every optimizer step (R4).

    Args:
        max_norm: the bound c; the paper uses values between 3 and 4.
        skip_last: leave the final classifier layer unconstrained.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[MaxNorm(max_norm=3.0)])
    """

    def __init__(self, max_norm: float = 3.0, skip_last: bool = False) -> None:
        if not max_norm > 0:
            raise ValueError(f"MaxNorm(max_norm={max_norm}): the bound must be positive, e.g. 3.0.")
        self.max_norm = max_norm
        self.skip_last = skip_last

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Runs after the optimizer step of this batch; re-applying it between accumulation steps is a no-op.
        apply_max_norm(pl_module, self.max_norm, self.skip_last)
