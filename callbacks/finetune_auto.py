"""T4 — `auto` fine-tuning: measure which cell of the lecture's table the run is in, then use its strategy.

Card:
    What: at the start of fit (pretrained weights loaded, data set up) two questions are answered:
        - data size: training samples per class against `min_samples_per_class` -> "little" or "lots";
        - similarity: how well the pretrained *top* stage's features separate the new classes compared
          with the earlier stages. Each stage's globally pooled features of up to `probe_samples`
          training images are classified by nearest class mean (cosine, fitted on one half, scored on
          the other). If the top stage scores at least as well as the best earlier stage (within
          `similarity_margin`), the pretraining task's features fit the new data: "similar";
          otherwise the top features are too specific: "different".
        The cell picks LinearProbe / StageProbe / FinetuneTop / FinetuneAll; the cell, the reason and
        the measurements are printed and logged (hyperparameters `finetune/*`, metrics `finetune/*`).
    When it helps: a first fine-tuning run on a new dataset, when you do not know the cell yet.
    Cost: one forward pass over `probe_samples` training images at fit start.

Why here: no library picks a fine-tuning strategy; the measurement is ours (nearest class mean is a
training-free stand-in for "linear classifier accuracy", cheap enough to run before every fit).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from ..utils.probe import eval_mode
from .finetune_parts import backbone_parts, ensure_pretrained, find_backbone, stage_features
from .finetune_strategies import FinetuneAll, FinetuneTop, LinearProbe, StageProbe

__all__ = ["AutoFinetune", "nearest_class_mean_accuracy"]

CELLS = {
    ("little", "similar"): "linear-probe",
    ("little", "different"): "stage-probe",
    ("lots", "similar"): "finetune-top",
    ("lots", "different"): "finetune-all",
}


def nearest_class_mean_accuracy(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of a cosine nearest-class-mean classifier: fitted on every other sample of each class, scored
    on the rest (classes with one sample only help fit)."""
    features = F.normalize(features - features.mean(dim=0), dim=1)
    classes = labels.unique()
    fit = torch.zeros_like(labels, dtype=torch.bool)
    for c in classes:
        fit[(labels == c).nonzero().flatten()[::2]] = True
    means = F.normalize(torch.stack([features[fit & (labels == c)].mean(dim=0) for c in classes]), dim=1)
    predicted = classes[(features[~fit] @ means.T).argmax(dim=1)]
    return (predicted == labels[~fit]).float().mean().item() if (~fit).any() else 0.0


_HOOKS = ("on_fit_start", "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end",
          "on_validation_epoch_start", "on_validation_batch_end", "on_validation_epoch_end", "on_fit_end")


class AutoFinetune(Callback):
    """Choose the fine-tuning strategy from data size and measured similarity, log why, and run it (T4).

    Args:
        min_samples_per_class: at or above this many training samples per class the data counts as "lots".
        similarity_margin: "similar" when top-stage accuracy >= best earlier stage's minus this.
        probe_samples: training images used to measure similarity.
        top_blocks: blocks `FinetuneTop` trains; backbone_lr_factor: `FinetuneAll`'s backbone LR factor.

    Reads the module's `backbone`, `load_pretrained` and `pretrained_source` (`protocol.TrickModule`), as the
    strategy it picks does.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[AutoFinetune(min_samples_per_class=100)])
    """

    def __init__(self, min_samples_per_class: int = 100, similarity_margin: float = 0.02, probe_samples: int = 1000,
                 top_blocks: int = 2, backbone_lr_factor: float = 0.1) -> None:
        if min_samples_per_class < 1:
            raise ValueError(f"AutoFinetune(min_samples_per_class={min_samples_per_class}): use a positive count, e.g. 100.")
        if not 0.0 <= similarity_margin < 1.0:
            raise ValueError(f"AutoFinetune(similarity_margin={similarity_margin}): use an accuracy gap in [0, 1), e.g. 0.02.")
        if probe_samples < 4:
            raise ValueError(f"AutoFinetune(probe_samples={probe_samples}): use at least 4, e.g. 1000.")
        FinetuneTop(blocks=top_blocks), FinetuneAll(backbone_lr_factor=backbone_lr_factor)  # validate their args now
        self.min_samples_per_class, self.similarity_margin = min_samples_per_class, similarity_margin
        self.probe_samples, self.top_blocks, self.backbone_lr_factor = probe_samples, top_blocks, backbone_lr_factor
        self.strategy: Callback | None = None
        self.choice: dict = {}
        for hook in _HOOKS:
            setattr(self, hook, self._forward(hook))

    def _forward(self, hook: str):
        def call(*args, **kwargs):
            if self.strategy is not None:
                getattr(self.strategy, hook)(*args, **kwargs)

        return call

    @torch.no_grad()
    def measure(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Samples per class and per-stage nearest-class-mean accuracies of the pretrained features."""
        if trainer.datamodule is None:
            raise ValueError("AutoFinetune needs a datamodule (trainer.fit(model, datamodule=...)) to size the data.")
        loader = trainer.datamodule.train_dataloader()
        parts = backbone_parts(find_backbone(pl_module))
        num_classes = [m for m in parts.head.modules() if isinstance(m, nn.Linear)][-1].out_features
        samples_per_class = len(loader.dataset) / num_classes
        collected, labels, seen = [], [], 0
        with eval_mode(pl_module):
            for images, targets in loader:
                collected.append(stage_features(parts, images.to(pl_module.device)))
                labels.append(targets.argmax(dim=1) if targets.dim() > 1 else targets)
                seen += len(targets)
                if seen >= self.probe_samples:
                    break
        labels = torch.cat(labels)[:self.probe_samples].to(pl_module.device)
        per_stage = [torch.cat([batch[i] for batch in collected])[:self.probe_samples] for i in range(len(parts.stages))]
        accuracies = [nearest_class_mean_accuracy(f.float(), labels) for f in per_stage]
        return {"samples_per_class": samples_per_class, "stage_accuracies": accuracies}

    def decide(self, samples_per_class: float, stage_accuracies: list[float]) -> dict:
        """The cell and its strategy name from the two measurements, with a sentence saying why."""
        size = "lots" if samples_per_class >= self.min_samples_per_class else "little"
        top, earlier = stage_accuracies[-1], max(stage_accuracies[:-1], default=stage_accuracies[-1])
        similarity = "similar" if top >= earlier - self.similarity_margin else "different"
        reason = (
            f"{samples_per_class:.1f} training samples per class ({'>=' if size == 'lots' else '<'} "
            f"{self.min_samples_per_class}: {size} data); pretrained top-stage features separate the classes "
            f"with nearest-class-mean accuracy {top:.3f} vs {earlier:.3f} for the best earlier stage "
            f"(margin {self.similarity_margin}: {similarity} dataset)"
        )
        return {"data": size, "similarity": similarity, "strategy": CELLS[(size, similarity)], "reason": reason}

    def build(self, strategy: str) -> Callback:
        return {
            "linear-probe": LinearProbe,
            "stage-probe": StageProbe,
            "finetune-top": lambda: FinetuneTop(blocks=self.top_blocks),
            "finetune-all": lambda: FinetuneAll(backbone_lr_factor=self.backbone_lr_factor),
        }[strategy]()

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self.strategy is not None:
            return
        ensure_pretrained(pl_module, "AutoFinetune")  # measure the pretrained features, not the random init
        measured = self.measure(trainer, pl_module)
        self.choice = {**self.decide(**measured), **measured}
        self.strategy = self.build(self.choice["strategy"])
        self.strategy.setup(trainer, pl_module, stage)
        rank_zero_info(f"AutoFinetune: {self.choice['data']} data x {self.choice['similarity']} dataset -> "
                       f"{self.choice['strategy']}, because {self.choice['reason']}")
        params = {f"finetune/{key}": self.choice[key] for key in ("strategy", "data", "similarity", "reason")}
        metrics = {"finetune/samples_per_class": measured["samples_per_class"]}
        metrics.update({f"finetune/stage{i}_ncm_acc": a for i, a in enumerate(measured["stage_accuracies"])})
        for logger in trainer.loggers:
            logger.log_hyperparams(params)
            logger.log_metrics(metrics, step=0)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"choice": self.choice, "strategy": self.strategy.state_dict() if self.strategy else dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restored after setup, which re-measured: the same data and pretrained weights give the same cell.
        if self.strategy is not None and state_dict.get("choice", {}).get("strategy") == self.choice.get("strategy"):
            self.strategy.load_state_dict(state_dict["strategy"])
