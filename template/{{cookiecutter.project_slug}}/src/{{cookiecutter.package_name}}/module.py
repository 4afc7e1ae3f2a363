"""The LightningModule: a backbone, a mean-reduced cross-entropy, torchmetrics accuracy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.classification import MulticlassAccuracy

from .backbones import build_backbone


def default_optimizer(params) -> torch.optim.Optimizer:
    """The lecture's starting point: SGD with momentum at LR 0.1 (TRICKS.md T3)."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


class ImageClassifier(LightningModule):
    """Image classifier; every trick plugs in through callbacks, recipes or the options below.

    Args:
        num_classes, in_channels, image_size: linked from the DataModule by the CLI.
        backbone: a name from `backbones.BACKBONES` (`sized_convnet`, `resnet18`, ...).
        backbone_options: keyword arguments of that backbone (e.g. `{widths: [32, 64], dropout: 0.2}`).
        optimizer: an optimizer class path with its init args (the CLI fills in the parameters).
        lr_scheduler: an LR scheduler class path; ReduceLROnPlateau watches `lr_scheduler_monitor`.
        lr_scheduler_monitor: metric a plateau scheduler watches.
        label_smoothing: cross-entropy label smoothing.

    Example:
        >>> model = ImageClassifier(num_classes=10, in_channels=1, image_size=32)
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 32,
        backbone: str = "sized_convnet",
        backbone_options: dict[str, Any] | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_monitor: str = "val/loss",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing={label_smoothing}: use a value in [0, 1).")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.backbone = build_backbone(backbone, in_channels, num_classes, image_size, **(backbone_options or {}))
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Mean over the minibatch (T2): the gradient scale, and so the LR, do not depend on batch size.
        return F.cross_entropy(logits, targets, label_smoothing=self.hparams.label_smoothing, reduction="mean")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.loss(logits, targets)
        self.train_acc(logits, targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str, accuracy: MulticlassAccuracy) -> None:
        images, targets = batch
        logits = self(images)
        self.log(f"{stage}/loss", F.cross_entropy(logits, targets), prog_bar=True, sync_dist=True)
        accuracy(logits, targets)
        self.log(f"{stage}/acc", accuracy, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).softmax(dim=-1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = self.hparams.lr_scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": config}
