"""Shared core of the L1/L2 weight-penalty callbacks (tricks R1-R3 of docs/tricks.md).

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
