"""T3 — Step-wise LR schedules sized by the run: linear warmup + cosine, and one-cycle.

Lecture: "LR schedule: a typical value of the LR is 0.1; use a validation set; divide the LR by 2 (or 5)
when you stop making progress" — that default lives in the config (ReduceLROnPlateau, see
recipes/train/plateau.yaml). These are the *extras*: warmup + cosine (Goyal et al. 2017; Loshchilov &
Hutter 2017, SGDR) and one-cycle (Smith & Topin 2018).

Card:
    What: at fit start the callback replaces the module's LR scheduler with a per-step one whose
        length is `trainer.estimated_stepping_batches` (epochs x batches / accumulation, devices
        included), peaking at the optimizer's configured LR.
    When it helps: fixed training budgets; warmup keeps large-batch / high-LR starts stable.
    Cost: none.

Why here: torch has the schedulers, but they need the total number of steps at construction, which
a YAML config cannot know (it depends on the dataset, batch size, devices and max_epochs). The
trainer knows it once fit starts, so a small callback builds the scheduler then. The checkpoint
keeps the scheduler's state, and a resumed run rebuilds it before that state is restored; a one-cycle
run resumed with a different length is refused at start (its schedule cannot be stretched).
"""

from __future__ import annotations

import math
import warnings

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities.types import LRSchedulerConfig
from typing_extensions import override

__all__ = ["OneCycleSchedule", "WarmupCosineSchedule", "warmup_cosine_factor"]


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """LR multiplier at `step`: linear from 1/warmup to 1 over `warmup_steps`, then cosine down to `min_lr_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _total_steps(trainer, owner: str) -> int:
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise ValueError(f"{owner}: the run has no end (max_epochs=-1 and max_steps=-1); set trainer.max_epochs or max_steps.")
    return max(1, int(total))


def _install(trainer, scheduler, name: str) -> None:
    if len(trainer.optimizers) != 1:
        raise ValueError(f"{name}: expects one optimizer, the module configured {len(trainer.optimizers)}.")
    if trainer.lr_scheduler_configs:
        warnings.warn(f"{name} replaces the module's LR scheduler; set `model.lr_scheduler: null` to silence this.",
                      stacklevel=2)
    trainer.strategy.lr_scheduler_configs = [LRSchedulerConfig(scheduler, interval="step", frequency=1, name=None)]


class WarmupCosineSchedule(Callback):
    """Linear warmup over `warmup_fraction` of the steps, then cosine decay to `min_lr_ratio` x LR (T3 extra).

    Args:
        warmup_fraction: share of all optimizer steps spent warming up, in [0, 1).
        min_lr_ratio: final LR as a fraction of the peak (the optimizer's configured LR).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(max_epochs=10, callbacks=[WarmupCosineSchedule(warmup_fraction=0.05)])
    """

    def __init__(self, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.0) -> None:
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"WarmupCosineSchedule(warmup_fraction={warmup_fraction}): use a fraction in [0, 1), e.g. 0.05.")
        if not 0.0 <= min_lr_ratio < 1.0:
            raise ValueError(f"WarmupCosineSchedule(min_lr_ratio={min_lr_ratio}): use a ratio in [0, 1), e.g. 0.0.")
        self.warmup_fraction, self.min_lr_ratio = warmup_fraction, min_lr_ratio

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        total = _total_steps(trainer, "WarmupCosineSchedule")
        warmup = max(1, round(self.warmup_fraction * total)) if self.warmup_fraction > 0 else 0

        def factor(step: int) -> float:
            return warmup_cosine_factor(step, total, warmup, self.min_lr_ratio)

        _install(trainer, torch.optim.lr_scheduler.LambdaLR(trainer.optimizers[0], factor), "WarmupCosineSchedule")


class OneCycleSchedule(Callback):
    """torch's OneCycleLR over the whole run, peaking at the optimizer's configured LR (T3 extra).

    Args:
        pct_start: share of the steps spent increasing the LR.
        div_factor: the LR starts at peak / div_factor.
        final_div_factor: the LR ends at start / final_div_factor.
        cycle_momentum: cycle SGD momentum (or Adam's beta1) inversely to the LR, when the optimizer has one.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(max_epochs=10, callbacks=[OneCycleSchedule(pct_start=0.3)])
    """

    def __init__(self, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 cycle_momentum: bool = True) -> None:
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"OneCycleSchedule(pct_start={pct_start}): use a fraction in (0, 1), e.g. 0.3.")
        for name, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            if not value >= 1.0:
                raise ValueError(f"OneCycleSchedule({name}={value}): use a divisor >= 1, e.g. 25.")
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor
        self.cycle_momentum = cycle_momentum

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        total = _total_steps(trainer, "OneCycleSchedule")
        optimizer = trainer.optimizers[0]
        has_momentum = any(group.get("momentum") or "betas" in group for group in optimizer.param_groups)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total,
            pct_start=self.pct_start, div_factor=self.div_factor, final_div_factor=self.final_div_factor,
            cycle_momentum=self.cycle_momentum and has_momentum,
        )
        _install(trainer, scheduler, "OneCycleSchedule")

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A resumed run gets the checkpoint's schedule back only now; torch's OneCycleLR would otherwise stop
        # with "Tried to step N times" deep inside the run when the step count changed since the checkpoint.
        scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        needed = _total_steps(trainer, "OneCycleSchedule")
        if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and scheduler.total_steps != needed:
            raise ValueError(
                f"OneCycleSchedule: the checkpoint's one-cycle schedule spans {scheduler.total_steps} steps, this run "
                f"{needed} (trainer.max_epochs, max_steps, the batch size or the data changed since it was saved). A "
                "one-cycle schedule cannot be stretched: resume with the settings the checkpoint was trained with, "
                "or start a new run from its weights.")
