"""R3 — L1 + L2 combined ("elastic net"): every gradient gains l1·sign(w) + l2·w.

Lecture: "L1 + L2 can also be combined" (Dropout paper's table: L2 + L1, 1.60% MNIST error).

Card:
    What: before every optimizer step each covered parameter's gradient gains l1·sign(w) + l2·w;
        both penalty values are logged (`regularize/l1`, `regularize/l2`).
    When it helps: sparse weights (L1) that stay small (L2).
    Cost: one pass over the parameters per step.

Why here: no torch optimizer has L1. See `_penalty_core` for how this differs from weight_decay.
"""

from __future__ import annotations

from ._penalty_core import PenaltyCallback

__all__ = ["L1L2Penalty"]


class L1L2Penalty(PenaltyCallback):
    """Add l1·sign(w) + l2·w to every covered gradient before each optimizer step (R3).

    Args:
        l1: strength of l1·‖w‖₁.
        l2: strength of ½·l2·‖w‖².
        exclude_bias_and_norm: leave biases and BatchNorm/GroupNorm/LayerNorm parameters alone.
        log: log both penalty values every step.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[L1L2Penalty(l1=1e-5, l2=5e-4)])
    """

    def __init__(self, l1: float = 1e-5, l2: float = 5e-4, exclude_bias_and_norm: bool = True, log: bool = True) -> None:
        if not (l1 > 0 and l2 > 0):
            raise ValueError(f"L1L2Penalty(l1={l1}, l2={l2}): both strengths must be positive; use L1Penalty or L2Penalty for one.")
        super().__init__(l1=l1, l2=l2, exclude_bias_and_norm=exclude_bias_and_norm, log=log)
