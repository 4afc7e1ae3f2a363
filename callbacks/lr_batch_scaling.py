"""T2 — LR scaling by the global batch size: none / linear / sqrt, relative to a reference batch.

Lecture: "Gradient normalization: divide the gradients by minibatch size. You won't need to change the
learning rates (not too much, anyway), if you double the minibatch size (or halve it)."

Card:
    What: the project's loss is the minibatch *mean* (module.py `loss`), so the gradient scale does not
        depend on the batch size. This callback then sets the LR for the *global* batch
        (devices x per-device batch x accumulate_grad_batches) relative to `reference_batch`:
        `none` keeps it, `linear` multiplies it by global/reference (Goyal et al. 2017),
        `sqrt` by sqrt(global/reference) (Krizhevsky 2014; common with Adam).
    When it helps: moving a tuned config from 1 GPU to 8 (or adding gradient accumulation) without
        re-tuning the LR; the effective LR is printed and logged at the start of fit.
    Cost: none at run time; one multiplication at fit start.

Why here: Lightning has no LR scaling rule (its LearningRateFinder searches, it does not scale); the
rule is a few lines, but it must see the trainer's world size and accumulation, hence a callback.
"""

from __future__ import annotations

import math
from typing import Literal

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

__all__ = ["LRBatchScaling", "global_batch_size", "lr_scale", "scale_lrs"]

RULES = ("none", "linear", "sqrt")
Rule = Literal["none", "linear", "sqrt"]
# Everything in a param group / scheduler that is an LR and must move with it: OneCycleLR keeps
# max_lr/min_lr/initial_lr in the groups, LambdaLR/CosineAnnealing keep base_lrs.
_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def global_batch_size(devices: int, batch_size: int, accumulate_grad_batches: int = 1) -> int:
    """Samples per optimizer step: devices x per-device batch x accumulation."""
    for name, value in (("devices", devices), ("batch_size", batch_size), ("accumulate_grad_batches", accumulate_grad_batches)):
        if value < 1:
            raise ValueError(f"global_batch_size({name}={value}): must be >= 1.")
    return devices * batch_size * accumulate_grad_batches


def lr_scale(global_batch: int, reference_batch: int, rule: Rule) -> float:
    """The factor the LR is multiplied by: 1, global/reference, or sqrt(global/reference)."""
    if rule not in RULES:
        raise ValueError(f"lr_scale(rule={rule!r}): choose one of {', '.join(RULES)}.")
    ratio = global_batch / reference_batch
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


def scale_lrs(trainer, factor: float) -> list[float]:
    """Multiply every LR the trainer's optimizers and schedulers hold by `factor`; returns the new group LRs."""
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            for key in _LR_KEYS:
                if isinstance(group.get(key), (int, float)):
                    group[key] *= factor
    for config in trainer.lr_scheduler_configs:
        if hasattr(config.scheduler, "base_lrs"):
            config.scheduler.base_lrs = [lr * factor for lr in config.scheduler.base_lrs]
    return [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups]


def _per_device_batch(trainer) -> int | None:
    for holder in (trainer.datamodule, getattr(trainer.lightning_module, "hparams", None)):
        value = getattr(holder, "batch_size", None) if holder is not None else None
        if isinstance(value, int):
            return value
    return None


class LRBatchScaling(Callback):
    """Scale every optimizer LR by the global batch size relative to `reference_batch` (T2).

    Args:
        rule: `none`, `linear` or `sqrt`.
        reference_batch: the global batch the configured LR was tuned for (the default config's 64 on 1 device).
        batch_size: per-device batch; `None` reads `trainer.datamodule.batch_size`.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[LRBatchScaling(rule="linear", reference_batch=64)], accumulate_grad_batches=2)
    """

    def __init__(self, rule: Rule = "linear", reference_batch: int = 64,
                 batch_size: int | None = None) -> None:
        if rule not in RULES:
            raise ValueError(f"LRBatchScaling(rule={rule!r}): choose one of {', '.join(RULES)}.")
        if reference_batch < 1:
            raise ValueError(f"LRBatchScaling(reference_batch={reference_batch}): use the batch the LR was tuned for, e.g. 64.")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"LRBatchScaling(batch_size={batch_size}): use a positive batch or None to read the datamodule's.")
        self.rule, self.reference_batch, self.batch_size = rule, reference_batch, batch_size
        self.scale: float | None = None
        self.effective_lrs: list[float] = []

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Optimizers exist by now; on a resume the checkpoint's (already scaled) LRs are restored after this.
        batch = self.batch_size or _per_device_batch(trainer)
        if batch is None:
            raise ValueError("LRBatchScaling(batch_size=None): the datamodule has no `batch_size`; pass batch_size=<per-device batch>.")
        world = trainer.world_size
        total = global_batch_size(world, batch, trainer.accumulate_grad_batches)
        self.scale = lr_scale(total, self.reference_batch, self.rule)
        self.effective_lrs = scale_lrs(trainer, self.scale)
        if not trainer.is_global_zero:
            return
        rank_zero_info(
            f"LRBatchScaling: global batch {total} = {world} device(s) x {batch} x {trainer.accumulate_grad_batches} "
            f"accumulation; rule {self.rule!r} vs reference {self.reference_batch} -> LR x{self.scale:.4g}, "
            f"effective LR {', '.join(f'{lr:.4g}' for lr in self.effective_lrs)}"
        )
        metrics = {"lr_scaling/global_batch": float(total), "lr_scaling/factor": self.scale}
        metrics.update({f"lr_scaling/effective_lr_{i}": lr for i, lr in enumerate(self.effective_lrs)})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
