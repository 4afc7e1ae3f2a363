"""R1 — L2 regularization ½·λ·w²: every gradient gains λ·w, biases and norm layers optionally left out.

Lecture: "Regularization: L2 regularization" (Dropout paper's table: L2 alone, 1.62% MNIST error).

Card:
    What: before every optimizer step each covered parameter's gradient gains λ·w (the gradient of
        ½·λ·‖w‖²); the penalty's value is logged as `regularize/l2`.
    When it helps: almost always a little; the lecture's default strength is 5e-4.
    Cost: one pass over the parameters per step.

Why here: the optimizer's weight_decay cannot leave biases and norm layers out without parameter
groups, and does not log the penalty; see `_penalty_core` for how the two differ (set the
optimizer's weight_decay to 0 with this callback, as `recipes/regularize/l2.yaml` does).
"""

from __future__ import annotations

from ._penalty_core import PenaltyCallback

__all__ = ["L2Penalty"]


class L2Penalty(PenaltyCallback):
    """Add λ·w to every covered gradient before each optimizer step (R1).

    Args:
        weight: λ, the strength of ½·λ·‖w‖².
        exclude_bias_and_norm: leave biases and BatchNorm/GroupNorm/LayerNorm parameters alone.
        log: log the penalty's value as `regularize/l2` every step.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[L2Penalty(weight=5e-4)])
    """

    def __init__(self, weight: float = 5e-4, exclude_bias_and_norm: bool = True, log: bool = True) -> None:
        if not weight > 0:
            raise ValueError(f"L2Penalty(weight={weight}): use a positive strength, e.g. 5e-4.")
        super().__init__(l2=weight, exclude_bias_and_norm=exclude_bias_and_norm, log=log)
