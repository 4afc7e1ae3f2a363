"""Reliability callbacks in the default config: interrupted runs resume, diverged runs stop cleanly.

Lightning's ModelCheckpoint(save_on_exception=True) would also write `best.ckpt` on an interrupt
and happily store NaN weights, and Lightning checkpoints carry no RNG state (a resumed run would
draw other shuffles, augmentations and dropout masks); these two small classes close those gaps.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException


def weights_are_finite(module: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in module.parameters())


def collect_rng_states() -> dict[str, Any]:
    """The RNG states a training step draws from (torch CPU/CUDA, Python, NumPy), as plain tensors
    and tuples so that `torch.load(weights_only=True)` reads them back. (Lightning's private
    `_collect_rng_states` keeps NumPy's state as an ndarray, which weights-only loading refuses.)"""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class SafeCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, plus two guarantees.

    * A model with NaN/Inf weights is never written, so the last good `last.ckpt`/`best.ckpt`
      survive a divergence.
    * SIGTERM (what SLURM and most schedulers send) or Ctrl-C saves `last.ckpt` before the run
      ends, so `lightning fit ... --ckpt_path last` continues from there; `best.ckpt` is untouched.
    * `fast_dev_run` writes no checkpoint at all (Lightning 2.6 still wrote `last.ckpt` at the end).
    * `last.ckpt` is written at every epoch's save point (Lightning 2.6 writes it only when a new
      top-k checkpoint was written in the same step, so a kill after epochs without a new best
      would lose all of them).
    * Every checkpoint carries the RNG states (torch, CUDA, Python, NumPy) of the moment it was
      written, and resuming restores them: the resumed run draws the same shuffles, augmentations
      and dropout masks as an uninterrupted one (rank 0's states; every rank gets them).

    Example (the default config):
        - class_path: SafeCheckpoint
          init_args: {monitor: val/acc, mode: max, filename: best, save_last: true}
    """

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        if not weights_are_finite(trainer.lightning_module):
            rank_zero_warn(f"Not writing {filepath}: the model has NaN/Inf weights; the previous checkpoint is kept.")
            return
        super()._save_checkpoint(trainer, filepath)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_at_every_save_point(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_at_every_save_point(trainer)

    def _save_last_at_every_save_point(self, trainer: Trainer) -> None:
        due = self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0
        # _should_skip_saving_checkpoint is also true when this step was saved already (new best + last).
        if self.save_last and due and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning 2.6 writes last.ckpt here even under fast_dev_run, which promises no checkpoints
        # (a wiring check left runs/checkpoints/last.ckpt behind, which `--ckpt_path last` then found).
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng_states": collect_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        rng_states = state_dict.pop("rng_states", None)
        super().load_state_dict(state_dict)
        # Lightning restores callbacks before the fit loop builds its first DataLoader iterator (which
        # draws a seed) and runs the sanity check under isolate_rng, so restoring now repeats the draws
        # of the uninterrupted run.
        if rng_states is not None:  # checkpoints written before this field existed resume without it
            restore_rng_states(rng_states)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, (SIGTERMException, KeyboardInterrupt))
        if interrupted and self.save_last and not trainer.fast_dev_run and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            rank_zero_info(f"Interrupted at step {trainer.global_step}: saved {self.last_model_path}; "
                           "continue with --ckpt_path last")


class NanGuard(Callback):
    """Stops training at the first NaN/Inf loss, before the optimizer step spreads it into the weights.

    The message gives the lecture's diagnosis (a very high learning rate makes the loss explode)
    and the fix. Checking costs one scalar read per step.
    """

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if torch.isfinite(loss).all():
            return
        lrs = sorted({group["lr"] for opt in trainer.optimizers for group in opt.param_groups})
        raise FloatingPointError(
            f"Training stopped at step {trainer.global_step}: the training loss is {loss.item()}. The lecture's "
            f"'very high learning rate' (the loss explodes): divide the learning rate (now {', '.join(map(str, lrs))}) "
            "by 2-5, e.g. --model.optimizer.init_args.lr, or add --trainer.gradient_clip_val=1.0; then resume "
            "from the last good checkpoint with --ckpt_path last."
        )
