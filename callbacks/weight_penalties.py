"""R1–R3 — Weight penalties: L2, L1 and both, added to the gradients (one family, one core).

    R1 — L2 regularization ½·λ·w²: every gradient gains λ·w, biases and norm layers optionally left out.
    R2 — L1 regularization λ·|w|: every gradient gains λ·sign(w), so weights get sparser.
    R3 — L1 + L2 combined ("elastic net"): every gradient gains l1·sign(w) + l2·w.

The penalty is added to the gradients, not to the loss: in `on_before_optimizer_step` (after
backward, after gradient accumulation and AMP unscaling, before clipping and the step) each
parameter's gradient gains l2·w + l1·sign(w), the gradient of ½·l2·‖w‖² + l1·‖w‖₁. So it works with
any LightningModule and any optimizer, needs no change to `training_step`, and costs no extra
backward. Frozen parameters (no gradient) are untouched.

How it differs from the optimizer's `weight_decay`:
    - SGD's weight_decay=λ adds λ·w to the gradient too, so L2Penalty(λ) equals it for SGD;
      Adam's weight_decay is the same coupled L2, AdamW's is decoupled (not a loss term).
    - weight_decay applies to every parameter of the group, biases and BatchNorm gains included;
      here biases and norm layers can be left out (`exclude_bias_and_norm`).
    - no torch optimizer has L1.
    - the penalty's value is logged (`regularize/l1`, `regularize/l2`).
    Use one or the other: set the optimizer's weight_decay to 0 with an L2 penalty (the recipes
    do), or it is applied twice; the callback warns at fit start when it sees both.
"""

from __future__ import annotations

import math

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.optim import Optimizer
from typing_extensions import override

__all__ = ["L1L2Penalty", "L1Penalty", "L2Penalty"]


# Parameters of these layers are gains/shifts of a normalization, not weights to shrink.
NORM_LAYERS = (_NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def penalized_parameters(model: nn.Module, exclude_bias_and_norm: bool = True) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every trainable parameter the penalty covers."""
    chosen = []
    for module_name, module in model.named_modules():
        in_norm = isinstance(module, NORM_LAYERS)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if exclude_bias_and_norm and (in_norm or name == "bias"):
                continue
            chosen.append((f"{module_name}.{name}" if module_name else name, param))
    return chosen


@torch.no_grad()
def add_penalty_gradients(params: list[torch.Tensor], l1: float = 0.0, l2: float = 0.0) -> tuple[float, float]:
    """grad += l1·sign(w) + l2·w for every parameter with a gradient; returns the penalty values
    (l1·Σ|w|, ½·l2·Σw²) over those parameters."""
    l1_value = l2_value = 0.0
    for param in params:
        if param.grad is None:
            continue
        if l2:
            param.grad.add_(param, alpha=l2)
            l2_value += 0.5 * l2 * float(param.pow(2).sum())
        if l1:
            param.grad.add_(param.sign(), alpha=l1)
            l1_value += l1 * float(param.abs().sum())
    return l1_value, l2_value


def check_strength(owner: str, name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}({name}={value}): use a finite strength >= 0, e.g. 5e-4.")
    return float(value)


class PenaltyCallback(Callback):
    """Adds l1·sign(w) + l2·w to the gradients before every optimizer step and logs the penalty."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0, exclude_bias_and_norm: bool = True, log: bool = True) -> None:
        owner = type(self).__name__
        self.l1 = check_strength(owner, "l1", l1)
        self.l2 = check_strength(owner, "l2", l2)
        self.exclude_bias_and_norm = exclude_bias_and_norm
        self.log_penalty = log
        self._params: list[torch.Tensor] | None = None

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._params = [p for _, p in penalized_parameters(pl_module, self.exclude_bias_and_norm)]
        covered = {id(p) for p in self._params}
        if self.l2 > 0:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    decay = group.get("weight_decay", 0.0)
                    if decay and any(id(p) in covered for p in group["params"]):
                        rank_zero_warn(
                            f"{type(self).__name__}(l2={self.l2}) and {type(optimizer).__name__}(weight_decay={decay}) both "
                            "shrink the same weights: L2 is applied twice. Set model.optimizer.init_args.weight_decay: 0.0."
                        )
                        return

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if self._params is None:
            self._params = [p for _, p in penalized_parameters(pl_module, self.exclude_bias_and_norm)]
        l1_value, l2_value = add_penalty_gradients(self._params, self.l1, self.l2)
        if self.log_penalty:
            if self.l1:
                pl_module.log("regularize/l1", l1_value, on_step=True, on_epoch=False)
            if self.l2:
                pl_module.log("regularize/l2", l2_value, on_step=True, on_epoch=False)


# --------------------------------------------------------------------------------------------------
# R1 — L2 regularization ½·λ·w²: every gradient gains λ·w, biases and norm layers optionally left out.
#
# Lecture: "Regularization: L2 regularization" (Dropout paper's table: L2 alone, 1.62% MNIST error).
#
# Card:
#     What: before every optimizer step each covered parameter's gradient gains λ·w (the gradient of
#         ½·λ·‖w‖²); the penalty's value is logged as `regularize/l2`.
#     When it helps: almost always a little; the lecture's default strength is 5e-4.
#     Cost: one pass over the parameters per step.
#
# Why here: the optimizer's weight_decay cannot leave biases and norm layers out without parameter
# groups, and does not log the penalty; see the module docstring for how the two differ (set the
# optimizer's weight_decay to 0 with this callback, as `recipes/regularize/l2.yaml` does).


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


# --------------------------------------------------------------------------------------------------
# R2 — L1 regularization λ·|w|: every gradient gains λ·sign(w), so weights get sparser.
#
# Lecture: "Regularization: L1 regularization" (CS231n: L1 drives many weights to (near) zero, the
# unit keeps a sparse subset of its inputs).
#
# Card:
#     What: before every optimizer step each covered parameter's gradient gains λ·sign(w) (the
#         gradient of λ·‖w‖₁; sign(0) = 0); the penalty's value is logged as `regularize/l1`.
#     When it helps: when few inputs should matter (feature selection); usually weaker than L2
#         for CNNs. With SGD the weights end near zero (within lr·λ), not exactly zero.
#     Cost: one pass over the parameters per step.
#
# Why here: no torch optimizer has L1. See the module docstring for how this differs from weight_decay.


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


# --------------------------------------------------------------------------------------------------
# R3 — L1 + L2 combined ("elastic net"): every gradient gains l1·sign(w) + l2·w.
#
# Lecture: "L1 + L2 can also be combined" (Dropout paper's table: L2 + L1, 1.60% MNIST error).
#
# Card:
#     What: before every optimizer step each covered parameter's gradient gains l1·sign(w) + l2·w;
#         both penalty values are logged (`regularize/l1`, `regularize/l2`).
#     When it helps: sparse weights (L1) that stay small (L2).
#     Cost: one pass over the parameters per step.
#
# Why here: no torch optimizer has L1. See the module docstring for how this differs from weight_decay.


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
