"""E3 — Snapshot ensemble: M cosine cycles with restarts, one snapshot per cycle, the last K ensembled.

Lecture: "Ensembles: different checkpoints of a single model ... very cheap" (Huang et al. 2017,
Snapshot Ensembles: Train 1, get M for free).

Card:
    What: the learning rate follows M cosine-annealing cycles over the whole fit (Huang et al.'s
        lr(t) = lr_min + (lr_max - lr_min)/2 * (1 + cos(pi * t_in_cycle / cycle_length)), set on
        every param group before each optimizer step); at the end of each cycle, where the LR is at
        its minimum and the model at a local minimum, a full checkpoint is written. When the fit
        ends, the last K snapshots are evaluated on the validation set one by one and as an
        ensemble (averaged probabilities, members batched with torch.func.vmap on GPUs); `val/ensemble_acc`, `val/ensemble_nll` and
        `val/snapshot<c>_acc`, `val/snapshot<c>_nll` go to every logger.
    When it helps: one training budget gives M diverse models (the restarts kick the weights out of
        each minimum); typically the ensemble beats the last model by a point or more of accuracy
        and is better calibrated. Use `python -m <package>.ensemble test <snapshot folder>` to test
        or predict with the snapshots afterwards.
    Cost: M checkpoints on disk; at fit end one validation pass of K members (batched together).

Where the snapshots go (the run folder, the same rule as the project's checkpoints):
    1. `dirpath` when given;
    2. else `<ModelCheckpoint.dirpath>/snapshots` (e.g. `runs/<project>/<run id>/checkpoints/snapshots`);
    3. else `<logger save_dir>/<logger name>/<logger version>/checkpoints/snapshots`;
    4. else `<trainer.default_root_dir>/checkpoints/snapshots`.
    Under `fast_dev_run` they go to a temporary folder that is removed at the end.

Owning the LR schedule: another LR scheduler would fight over the same LR, so one configured at fit
start is an error (the recipe sets `model.lr_scheduler: null`). Resuming from any checkpoint of the
run continues the same schedule: the cycle boundaries and base LRs are part of the callback state,
and the position is the trainer's `global_step`. Under DDP every rank computes the same LR from
`global_step`, snapshots are written once (rank 0, through `trainer.save_checkpoint`), and the
ensemble metrics are summed over ranks.

Why here: Lightning has no snapshot ensemble; torch's `CosineAnnealingWarmRestarts` gives the LR
curve but neither the snapshots, nor the ensemble evaluation, nor the fixed number of cycles over
an unknown number of steps per epoch.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from ..utils.ensembling import combine, member_logits, nll, stack_states, vmap_pays_off

__all__ = ["SnapshotEnsemble", "cycle_boundaries", "snapshot_lr"]


def cycle_boundaries(total_steps: int, cycles: int) -> list[int]:
    """Optimizer-step boundaries [0, b1, ..., total] of `cycles` cycles as equal as integers allow."""
    return [c * total_steps // cycles for c in range(cycles + 1)]


def snapshot_lr(step: int, boundaries: list[int], lr_max: float, lr_min: float = 0.0) -> float:
    """The LR of optimizer step `step` (0-based): cosine from lr_max down towards lr_min in each cycle."""
    step = min(max(step, 0), boundaries[-1] - 1)
    cycle = next(c for c in range(1, len(boundaries)) if step < boundaries[c])
    start, length = boundaries[cycle - 1], max(boundaries[cycle] - boundaries[cycle - 1], 1)
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * (step - start) / length))


class SnapshotEnsemble(Callback):
    """Cyclic cosine LR with a snapshot at the end of each cycle; ensemble of the last K at fit end (E3).

    Args:
        cycles: M, the number of cosine cycles (and snapshots) over the whole fit.
        ensemble_size: K, how many of the last snapshots form the ensemble (default: all M).
        lr_max: the LR at the start of each cycle; default: each param group's LR at fit start
            (the optimizer's configured LR).
        lr_min: the LR a cycle anneals towards.
        dirpath: where snapshots go; default: the run folder (see the module docstring).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(max_epochs=15, callbacks=[SnapshotEnsemble(cycles=3)])
    """

    def __init__(
        self,
        cycles: int = 3,
        ensemble_size: int | None = None,
        lr_max: float | None = None,
        lr_min: float = 0.0,
        dirpath: str | None = None,
    ) -> None:
        if cycles < 1:
            raise ValueError(f"SnapshotEnsemble(cycles={cycles}): use at least 1 cycle (Huang et al. use 3 to 6).")
        if ensemble_size is not None and not 1 <= ensemble_size <= cycles:
            raise ValueError(
                f"SnapshotEnsemble(ensemble_size={ensemble_size}): use a number between 1 and cycles={cycles}, or null for all."
            )
        if lr_min < 0:
            raise ValueError(f"SnapshotEnsemble(lr_min={lr_min}): the minimum LR must be >= 0, e.g. 0.0.")
        if lr_max is not None and not lr_max > lr_min:
            raise ValueError(f"SnapshotEnsemble(lr_max={lr_max}): must be above lr_min={lr_min}, e.g. 0.1.")
        self.cycles, self.ensemble_size = cycles, ensemble_size or cycles
        self.lr_max, self.lr_min, self.dirpath = lr_max, lr_min, dirpath
        self.boundaries: list[int] | None = None
        self.base_lrs: list[float] | None = None
        self.snapshots: dict[int, str] = {}  # cycle (1-based) -> file
        self.results: dict[str, float] = {}
        self._dir: Path | None = None
        self._temporary = False

    # -- state: the schedule survives a resume ------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"boundaries": self.boundaries, "base_lrs": self.base_lrs, "snapshots": dict(self.snapshots)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.boundaries = state_dict.get("boundaries")
        self.base_lrs = state_dict.get("base_lrs")
        self.snapshots = {int(k): v for k, v in (state_dict.get("snapshots") or {}).items()}

    # -- set-up ------------------------------------------------------------------------------
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # a new fit starts afresh; a resumed one then gets its state back from the checkpoint
            self.boundaries, self.base_lrs, self.snapshots, self.results = None, None, {}, {}

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.lr_scheduler_configs:
            names = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
            raise ValueError(
                f"SnapshotEnsemble owns the LR schedule, but an LR scheduler is configured too ({names}). "
                "Remove it: `model: lr_scheduler: null` in a config (recipes/ensemble/snapshot.yaml does this), "
                "and drop other LR-schedule recipes."
            )

    def _resolve_dir(self, trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath)
        if trainer.fast_dev_run:
            return Path(tempfile.mkdtemp(prefix="snapshots-"))
        if trainer.checkpoint_callback is not None and getattr(trainer.checkpoint_callback, "dirpath", None):
            return Path(trainer.checkpoint_callback.dirpath) / "snapshots"
        if trainer.loggers:
            logger = trainer.loggers[0]
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            return Path(logger.save_dir or trainer.default_root_dir, str(logger.name), version, "checkpoints", "snapshots")
        return Path(trainer.default_root_dir, "checkpoints", "snapshots")

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Every rank uses rank 0's folder (a temporary one or a logger version would differ).
        self._temporary = bool(trainer.fast_dev_run) and not self.dirpath
        self._dir = Path(trainer.strategy.broadcast(str(self._resolve_dir(trainer)) if trainer.is_global_zero else None))
        if self.boundaries is None:  # a fresh fit; a resumed one keeps its saved schedule
            total = trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ValueError(
                    "SnapshotEnsemble needs a finite fit to place its cycles: set trainer.max_epochs or trainer.max_steps."
                )
            self.boundaries = cycle_boundaries(int(total), self.cycles)
        if self.base_lrs is None:
            groups = trainer.optimizers[0].param_groups
            self.base_lrs = [self.lr_max if self.lr_max is not None else float(g["lr"]) for g in groups]
        if trainer.is_global_zero:
            rank_zero_info(
                f"SnapshotEnsemble: {self.cycles} cycles ending at steps {self.boundaries[1:]}; snapshots in {self._dir}"
            )

    # -- the schedule and the snapshots -------------------------------------------------------
    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        for optimizer in trainer.optimizers:
            for group, base in zip(optimizer.param_groups, self.base_lrs, strict=False):
                group["lr"] = snapshot_lr(trainer.global_step, self.boundaries, base, self.lr_min)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step  # optimizer steps done; equal on every rank
        if step not in self.boundaries[1:]:
            return
        cycle = self.boundaries.index(step)
        if cycle in self.snapshots:
            return  # already written (the micro-batches of one accumulated step all end here; or resumed)
        path = self._dir / f"snapshot-{cycle}.ckpt"
        self.snapshots[cycle] = str(path)
        trainer.save_checkpoint(path)  # all ranks call it; the strategy writes once, on rank 0
        rank_zero_info(f"SnapshotEnsemble: cycle {cycle}/{self.cycles} snapshot -> {path}")

    # -- the ensemble at fit end --------------------------------------------------------------
    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        try:
            self._evaluate(trainer, pl_module)
        finally:
            if self._temporary and self._dir is not None:
                trainer.strategy.barrier("snapshot-ensemble-cleanup")  # every rank is done reading
                if trainer.is_global_zero:
                    shutil.rmtree(self._dir, ignore_errors=True)

    def _val_loader(self, trainer):
        loaders = trainer.val_dataloaders
        if loaders is None and trainer.datamodule is not None and hasattr(trainer.datamodule, "val_dataloader"):
            loaders = trainer.datamodule.val_dataloader()
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        return loaders

    @torch.no_grad()
    def _evaluate(self, trainer, pl_module) -> None:
        cycles = sorted(self.snapshots)[-self.ensemble_size:]
        loader = self._val_loader(trainer)
        if not cycles or loader is None:
            rank_zero_info("SnapshotEnsemble: no snapshots or no validation data; skipping the ensemble evaluation.")
            return
        trainer.strategy.barrier("snapshot-ensemble-written")
        states = []
        for cycle in cycles:
            checkpoint = torch.load(self.snapshots[cycle], map_location=pl_module.device, weights_only=True)
            states.append(checkpoint["state_dict"])
        stacked = stack_states(states) if vmap_pays_off(pl_module.device) else None
        limit = trainer.num_val_batches[0] if trainer.num_val_batches else float("inf")
        # Per member and for the ensemble: correct predictions, summed NLL, count (summed over ranks).
        totals = torch.zeros(len(states) + 1, 3, device=pl_module.device, dtype=torch.float64)
        was_training = pl_module.training
        pl_module.eval()
        try:
            for index, batch in enumerate(loader):
                if index >= limit:
                    break
                images, targets = trainer.strategy.batch_to_device(batch, pl_module.device)[:2]
                logits = member_logits(pl_module, states, images, stacked).float()
                probs = torch.cat([logits.softmax(-1), combine(logits, "probs").unsqueeze(0)])
                for row, p in enumerate(probs):
                    totals[row, 0] += (p.argmax(-1) == targets).sum()
                    totals[row, 1] += nll(p, targets).sum()
                    totals[row, 2] += targets.numel()
        finally:
            pl_module.train(was_training)
        totals = trainer.strategy.reduce(totals, reduce_op="sum")
        count = totals[:, 2].clamp_min(1)
        acc, mean_nll = (totals[:, 0] / count).tolist(), (totals[:, 1] / count).tolist()
        self.results = {"val/ensemble_acc": acc[-1], "val/ensemble_nll": mean_nll[-1]}
        for row, cycle in enumerate(cycles):
            self.results[f"val/snapshot{cycle}_acc"] = acc[row]
            self.results[f"val/snapshot{cycle}_nll"] = mean_nll[row]
        for logger in trainer.loggers:
            logger.log_metrics(self.results, step=trainer.global_step)
            logger.save()
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in self.results.items()})
        members = ", ".join(f"{acc[r]:.4f}" for r in range(len(cycles)))
        rank_zero_info(
            f"SnapshotEnsemble: val acc of snapshots {cycles}: {members}; ensemble of {len(cycles)}: {acc[-1]:.4f} "
            f"(NLL {mean_nll[-1]:.4f} vs members' mean {sum(mean_nll[:-1]) / len(cycles):.4f})"
        )
