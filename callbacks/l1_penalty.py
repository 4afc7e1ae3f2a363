"""R2 — L1 regularization λ·|w|: every gradient gains λ·sign(w), so weights get sparser.

Lecture: "Regularization: L1 regularization" (CS231n: L1 drives many weights to (near) zero, the
unit keeps a sparse subset of its inputs).

Card:
    What: before every optimizer step each covered parameter's gradient gains λ·sign(w) (the
        gradient of λ·‖w‖₁; sign(0) = 0); the penalty's value is logged as `regularize/l1`.
    When it helps: when few inputs should matter (feature selection); usually weaker than L2
        for CNNs. With SGD the weights end near zero (within lr·λ), not exactly zero.
    Cost: one pass over the parameters per step.

Why here: no torch optimizer has L1. See `_penalty_core` for how this differs from weight_decay.
"""

from __future__ import annotations

from ._penalty_core import PenaltyCallback

__all__ = ["L1Penalty"]


class L1Penalty(PenaltyCallback):
    """Add λ·sign(w) to every covered gradient before each optimizer step (R2).

    Args:
        weight: λ, the strength of λ·‖w‖₁.
        exclude_bias_and_norm: leave biases and BatchNorm/GroupNorm/LayerNorm parameters alone.
        log: log the penalty's value as `regularize/l1` every step.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[L1Penalty(weight=1e-5)])
    """

    def __init__(self, weight: float = 1e-5, exclude_bias_and_norm: bool = True, log: bool = True) -> None:
        if not weight > 0:
            raise ValueError(f"L1Penalty(weight={weight}): use a positive strength, e.g. 1e-5.")
        super().__init__(l1=weight, exclude_bias_and_norm=exclude_bias_and_norm, log=log)
