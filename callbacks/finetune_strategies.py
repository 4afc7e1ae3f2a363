"""T4 — Fine-tuning strategies, the lecture's table made executable.

Lecture: "Fine-tune" table —

    |                     | very similar dataset               | very different dataset                          |
    | very little data    | linear classifier on the top layer | trouble: linear classifiers from different stages |
    | quite a lot of data | fine-tune a few layers             | fine-tune a large number of layers (smaller LR)  |

Card:
    What: `LinearProbe` freezes the backbone (weights and BatchNorm statistics) and trains the head;
        `StageProbe` does the same and also trains a linear classifier on every stage's pooled features,
        reporting each stage's validation accuracy and keeping the best; `FinetuneTop` trains the head and
        the last N blocks; `FinetuneAll` trains everything with a smaller backbone LR, optionally
        unfreezing stage by stage from the top (gradual unfreezing, Howard & Ruder 2018).
        `finetune_auto.AutoFinetune` picks the cell.
    When it helps: starting from pretrained weights — `model.pretrained_checkpoint` (an earlier run of
        ours) or `model.backbone_options.weights` (torchvision ResNets). Without them the strategies still
        run, from the random init, with a warning.
    Cost: frozen parts skip their weight gradients; `StageProbe` adds one small linear layer per stage.

Why here: Lightning's `BaseFinetuning` does the freezing, the param groups and their checkpointing;
these subclasses only say *what* to freeze for each cell (found by `finetune_parts.backbone_parts`) and
keep frozen BatchNorm statistics frozen, which `BaseFinetuning.freeze` leaves updating in train mode.
The per-stage probes exist nowhere in the ecosystem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import BaseFinetuning
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from ..utils.probe import probe_forward
from ._diagnostics import run_folder
from .finetune_parts import BackboneParts, backbone_parts, ensure_pretrained, find_backbone, freeze_bn_stats

__all__ = ["FinetuneAll", "FinetuneTop", "LinearProbe", "StageProbe"]


def _stage_end(stage: nn.Module) -> nn.Module:
    """The module whose output is the stage's features: the last layer of a Sequential stage (the stage
    containers of `backbone_parts` are built for slicing; the backbone's forward never calls them)."""
    return stage[-1] if isinstance(stage, nn.Sequential) and len(stage) else stage


def _width(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    return output.shape[1]


class _FrozenBody(BaseFinetuning):
    """Freeze some of the backbone before the optimizer is built; keep their BatchNorm statistics too.

    Reads the module's `backbone`, `load_pretrained` and `pretrained_source` (`protocol.TrickModule`).
    """

    name = "frozen-body"

    def __init__(self, freeze_bn_stats: bool = True) -> None:
        super().__init__()
        self.freeze_bn_stats = freeze_bn_stats
        self.frozen: list[nn.Module] = []

    def frozen_modules(self, parts: BackboneParts) -> list[nn.Module]:
        raise NotImplementedError

    @override
    def freeze_before_training(self, pl_module: LightningModule) -> None:
        ensure_pretrained(pl_module, type(self).__name__)
        self.frozen = self.frozen_modules(backbone_parts(find_backbone(pl_module)))
        self.freeze(self.frozen, train_bn=False)

    @override
    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        pass  # nothing is unfrozen later

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        # Lightning puts the whole module in train mode for each epoch (and after validation);
        # frozen BatchNorms go back to eval so their running mean/var stay the pretrained ones.
        if self.freeze_bn_stats:
            freeze_bn_stats(self.frozen)


class LinearProbe(_FrozenBody):
    """Train only the classifier head; the backbone's weights and BatchNorm statistics stay frozen (T4).

    The cell "very little data, very similar dataset": a linear classifier on the top features.
    Reads the module's `backbone`, `load_pretrained` and `pretrained_source` (`protocol.TrickModule`).

    Args:
        freeze_bn_stats: keep the frozen BatchNorms in eval mode (their running statistics unchanged).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[LinearProbe()])
    """

    name = "linear-probe"

    def frozen_modules(self, parts: BackboneParts) -> list[nn.Module]:
        return list(parts.blocks)


class FinetuneTop(_FrozenBody):
    """Train the head and the last `blocks` blocks; everything below stays frozen (T4).

    The cell "quite a lot of data, very similar dataset": fine-tune a few layers. A block is a residual
    block of a ResNet (its stem counts as one) or one conv (+BN+ReLU) of the sized convnet.
    Reads the module's `backbone`, `load_pretrained` and `pretrained_source` (`protocol.TrickModule`).

    Args:
        blocks: how many blocks from the top to train (>= 1).
        freeze_bn_stats: keep the frozen BatchNorms in eval mode.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[FinetuneTop(blocks=2)])
    """

    name = "finetune-top"

    def __init__(self, blocks: int = 2, freeze_bn_stats: bool = True) -> None:
        if blocks < 1:
            raise ValueError(f"FinetuneTop(blocks={blocks}): train at least 1 block; for none use LinearProbe.")
        super().__init__(freeze_bn_stats)
        self.blocks = blocks

    def frozen_modules(self, parts: BackboneParts) -> list[nn.Module]:
        return list(parts.blocks[:-self.blocks])


class FinetuneAll(BaseFinetuning):
    """Train the whole network, the backbone at `backbone_lr_factor` x the head's LR (T4).

    The cell "quite a lot of data, very different dataset": fine-tune many layers with a smaller LR.
    The backbone joins the optimizer as its own param group (Lightning's `BaseFinetuning`) at epoch
    `unfreeze_at_epoch`: all at once, or with `unfreeze_every=k`, one stage from the top every k epochs.
    Reads the module's `backbone`, `load_pretrained` and `pretrained_source` (`protocol.TrickModule`).

    Args:
        backbone_lr_factor: backbone LR as a fraction of the head's LR at the time it is unfrozen.
        unfreeze_at_epoch: epoch at which the backbone (or its top stage) starts training.
        unfreeze_every: 0 unfreezes all stages together; k > 0 one more stage every k epochs.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[FinetuneAll(backbone_lr_factor=0.1)])
    """

    name = "finetune-all"

    def __init__(self, backbone_lr_factor: float = 0.1, unfreeze_at_epoch: int = 0, unfreeze_every: int = 0) -> None:
        if not 0.0 < backbone_lr_factor <= 1.0:
            raise ValueError(f"FinetuneAll(backbone_lr_factor={backbone_lr_factor}): use a factor in (0, 1], e.g. 0.1.")
        if unfreeze_at_epoch < 0 or unfreeze_every < 0:
            raise ValueError(f"FinetuneAll(unfreeze_at_epoch={unfreeze_at_epoch}, unfreeze_every={unfreeze_every}): "
                             "use epochs >= 0.")
        super().__init__()
        self.backbone_lr_factor = backbone_lr_factor
        self.unfreeze_at_epoch, self.unfreeze_every = unfreeze_at_epoch, unfreeze_every
        self.unfrozen_stages = 0
        self.stages: list[nn.Module] = []

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "unfrozen_stages": self.unfrozen_stages}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.unfrozen_stages = state_dict.get("unfrozen_stages", 0)

    @override
    def freeze_before_training(self, pl_module: LightningModule) -> None:
        ensure_pretrained(pl_module, "FinetuneAll")
        self.stages = backbone_parts(find_backbone(pl_module)).stages
        self.freeze(self.stages, train_bn=False)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        # A resumed run gets its param groups back from the checkpoint; make those stages trainable again.
        if self.unfrozen_stages:
            self.make_trainable(self.stages[len(self.stages) - self.unfrozen_stages:])

    def stages_due(self, epoch: int) -> int:
        """How many stages (from the top) train at `epoch`."""
        if epoch < self.unfreeze_at_epoch:
            return 0
        if self.unfreeze_every == 0:
            return len(self.stages)
        return min(len(self.stages), 1 + (epoch - self.unfreeze_at_epoch) // self.unfreeze_every)

    @override
    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        due = self.stages_due(epoch)
        if due <= self.unfrozen_stages:
            return
        new = self.stages[len(self.stages) - due:len(self.stages) - self.unfrozen_stages]
        head_lr = optimizer.param_groups[0]["lr"]
        self.unfreeze_and_add_param_group(new, optimizer, lr=head_lr * self.backbone_lr_factor, train_bn=True)
        self.unfrozen_stages = due


class StageProbe(_FrozenBody):
    """Backbone frozen; a linear classifier on each stage's pooled features; the best stage kept (T4).

    The cell "very little data, very different dataset": the top features may be too specific to the
    pretraining task, so earlier (more generic) stages may separate the new classes better. Every
    validation epoch logs `probe/stage<i>/acc` for each stage and `probe/best_stage`, `probe/best_acc`;
    the module's own head keeps training as the top-stage linear probe. At the end of fit the best
    stage's classifier (stages up to it + global pool + its linear layer) is written to
    `stage_probe_best.pt` in the run folder (`torch.load(path, weights_only=False)` gives a callable
    module; not written under fast_dev_run); the probes and accuracies are also kept in the checkpoint's callback state.
    Reads the module's `backbone`, `load_pretrained`, `pretrained_source` and `example_input_array` (for the
    stage widths; a 3x32x32 zero image without it) (`protocol.TrickModule`).

    Args:
        probe_lr: Adam learning rate of the probes (their own optimizer, on detached features).
        freeze_bn_stats: keep the frozen BatchNorms in eval mode.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[StageProbe()])
    """

    name = "stage-probe"

    def __init__(self, probe_lr: float = 1e-2, freeze_bn_stats: bool = True) -> None:
        if not probe_lr > 0:
            raise ValueError(f"StageProbe(probe_lr={probe_lr}): use a positive LR, e.g. 0.01.")
        super().__init__(freeze_bn_stats)
        self.probe_lr = probe_lr
        self.probes: nn.ModuleList | None = None
        self.accuracies: list[float] = []
        self.best_stage: int | None = None
        self._features: dict[int, torch.Tensor] = {}
        self._hooks: list[RemovableHandle] = []
        self._counts: torch.Tensor | None = None
        self._pending_state: dict | None = None

    def frozen_modules(self, parts: BackboneParts) -> list[nn.Module]:
        return list(parts.blocks)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        backbone = find_backbone(pl_module)
        parts = backbone_parts(backbone)
        self.stages = parts.stages
        num_classes = [m for m in parts.head.modules() if isinstance(m, nn.Linear)][-1].out_features
        # Channel count of each stage: one dummy forward (eval, no grad) with a hook where `_capture` reads its features.
        example = getattr(pl_module, "example_input_array", None)
        example = example if isinstance(example, torch.Tensor) else torch.zeros(1, 3, 32, 32)
        seen = dict(probe_forward(backbone, example.to(pl_module.device), enumerate(map(_stage_end, self.stages)), _width))
        missing = [i for i in range(len(self.stages)) if i not in seen]
        if missing:
            raise ValueError(
                f"StageProbe: the output of stage(s) {missing} of {type(backbone).__name__} is never computed by its "
                "forward, so no features can be read there; give the backbone a `finetune_parts()` whose stages "
                "end in modules its forward calls."
            )
        widths = [seen[i] for i in range(len(self.stages))]
        # Pooled features differ in scale from stage to stage; a parameter-free BatchNorm standardizes them, so
        # one probe LR suits all stages (at eval it is a fixed affine map: the probe stays linear).
        self.probes = nn.ModuleList(
            nn.Sequential(nn.BatchNorm1d(width, affine=False), nn.Linear(width, num_classes)) for width in widths
        ).to(pl_module.device)
        if self._pending_state is not None:
            self.probes.load_state_dict(self._pending_state)
        self.probe_optimizer = torch.optim.Adam(self.probes.parameters(), lr=self.probe_lr)

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.probes is not None:
            state.update(probes=self.probes.state_dict(), accuracies=self.accuracies, best_stage=self.best_stage)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.accuracies, self.best_stage = state_dict.get("accuracies", []), state_dict.get("best_stage")
        if "probes" in state_dict:
            if self.probes is not None:
                self.probes.load_state_dict(state_dict["probes"])
            else:
                self._pending_state = state_dict["probes"]

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self.probes.to(pl_module.device)
        for index, stage_module in enumerate(self.stages):
            self._hooks.append(_stage_end(stage_module).register_forward_hook(self._capture(index)))

    def _capture(self, index: int) -> Callable[[nn.Module, tuple[Any, ...], torch.Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            self._features[index] = output.detach().mean(dim=(2, 3)) if output.dim() == 4 else output.detach().flatten(1)

        return hook

    @staticmethod
    def _labels(batch: Any) -> torch.Tensor:
        targets = batch[1]
        return targets.argmax(dim=1) if targets.dim() > 1 else targets

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        labels = self._labels(batch)
        self.probes.train()
        with torch.enable_grad():
            loss = sum(F.cross_entropy(probe(self._features[i]), labels) for i, probe in enumerate(self.probes))
            self.probe_optimizer.zero_grad()
            loss.backward()
        for param in self.probes.parameters():  # DDP: every rank applies the same mean gradient
            param.grad = trainer.strategy.reduce(param.grad, reduce_op="mean")
        self.probe_optimizer.step()

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._counts = torch.zeros(len(self.probes) + 1, device=pl_module.device)  # correct per stage, then total

    @override
    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        labels = self._labels(batch)
        self.probes.eval()
        with torch.no_grad():
            for i, probe in enumerate(self.probes):
                self._counts[i] += (probe(self._features[i]).argmax(dim=1) == labels).sum()
        self._counts[-1] += labels.numel()

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self._counts is None or self._counts[-1] == 0:
            return
        counts = trainer.strategy.reduce(self._counts, reduce_op="sum")
        self.accuracies = (counts[:-1] / counts[-1]).tolist()
        self.best_stage = max(range(len(self.accuracies)), key=self.accuracies.__getitem__)
        for i, accuracy in enumerate(self.accuracies):
            pl_module.log(f"probe/stage{i}/acc", accuracy)
        pl_module.log("probe/best_stage", float(self.best_stage))
        pl_module.log("probe/best_acc", self.accuracies[self.best_stage])

    def best_classifier(self) -> nn.Module:
        """Stages up to the best one, a global average pool and that stage's linear probe, as one module."""
        if self.best_stage is None:
            raise RuntimeError("StageProbe.best_classifier: no validation epoch has run yet.")
        return nn.Sequential(*self.stages[:self.best_stage + 1], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             self.probes[self.best_stage])

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self.best_stage is None or not trainer.is_global_zero:
            return
        accuracies = ", ".join(f"stage {i}: {a:.3f}" for i, a in enumerate(self.accuracies))
        folder = run_folder(trainer)
        if folder is None:  # fast_dev_run: nothing is written
            rank_zero_info(f"StageProbe: validation accuracy {accuracies}; best stage {self.best_stage} (fast_dev_run: not saved)")
            return
        path = folder / "stage_probe_best.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.best_classifier(), path)
        rank_zero_info(f"StageProbe: validation accuracy {accuracies}; best stage {self.best_stage}, saved to {path}")
