"""The LightningModule: a backbone, a mean-reduced cross-entropy, torchmetrics accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from torchmetrics.classification import MulticlassAccuracy

from .backbones import build_backbone


def default_optimizer(params) -> torch.optim.Optimizer:
    """The lecture's starting point: SGD with momentum at LR 0.1 (trick T3)."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


class ImageClassifier(LightningModule):
    """Image classifier; every trick plugs in through callbacks, recipes or the options below.

    Class weights (imbalanced data): at the start of fit the training cross-entropy takes the
    datamodule's `class_weights` (`data.class_weights`) when it has them. They are read there, not
    linked by the CLI, because `auto` needs the training split, which exists only after the Trainer's
    `prepare_data`/`setup` (a download), and so `Trainer.fit(model, datamodule=dm)` gets them too.

    Args:
        num_classes, in_channels, image_size: linked from the DataModule by the CLI.
        backbone: a name from `backbones.BACKBONES` (`sized_convnet`, `resnet18`, ...) or `timm/<model>`.
        backbone_options: keyword arguments of that backbone (e.g. `{widths: [32, 64], dropout: 0.2}`).
        optimizer: an optimizer class path with its init args (the CLI fills in the parameters).
        lr_scheduler: an LR scheduler class path; ReduceLROnPlateau watches `lr_scheduler_monitor`.
        lr_scheduler_monitor: metric a plateau scheduler watches.
        label_smoothing: cross-entropy label smoothing.
        pretrained_checkpoint: backbone weights to start from (T4): a checkpoint of an earlier run of
            ours (`runs/.../checkpoints/best.ckpt`) or a saved backbone `state_dict` (`.pt`/`.pth`, or a
            timm `.safetensors` file); loaded at the start
            of `fit`; tensors whose shape differs (a head for another number of classes) are skipped.

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
        pretrained_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing={label_smoothing}: use a value in [0, 1).")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.backbone = build_backbone(backbone, in_channels, num_classes, image_size, **(backbone_options or {}))
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)
        # Where the backbone's weights came from; fine-tune callbacks warn when it stays None.
        options = backbone_options or {}
        self.pretrained_source = ("torchvision weights" if options.get("weights")
                                  else "timm hub weights" if options.get("pretrained") else None)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.register_buffer("class_weights", None, persistent=False)  # set in setup("fit") from the datamodule

    def load_pretrained(self) -> None:
        """Load `pretrained_checkpoint` into the backbone once (fit's `setup`, or earlier by a callback)."""
        path = self.hparams.get("pretrained_checkpoint")
        if not path or self.pretrained_source == path:
            return
        if not Path(path).is_file():
            raise FileNotFoundError(f"model.pretrained_checkpoint={path!r} does not exist: give a .ckpt of an earlier run.")
        if Path(path).suffix == ".safetensors":  # timm's / the Hugging Face hub's weight files
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        if any(k.startswith("backbone.") for k in state):  # a checkpoint of the whole LightningModule
            state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        own = self.backbone.state_dict()
        matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not matched:
            raise ValueError(f"model.pretrained_checkpoint={path!r} has no weights for backbone {self.hparams.backbone!r}.")
        self.backbone.load_state_dict(matched, strict=False)
        # Mark the layers that got weights, so init callbacks (I1-I4) leave exactly those alone.
        for name, module in self.backbone.named_modules():
            own_params = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
            if own_params and all(key in matched for key in own_params):
                module.pretrained_weights = path
        self.pretrained_source = path
        rank_zero_info(f"Loaded {len(matched)}/{len(own)} backbone tensors from {path}")

    def setup(self, stage: str) -> None:
        if stage == "fit":  # a resumed run's own checkpoint is restored after this, so it wins
            self.load_pretrained()
            weights = getattr(getattr(self._trainer, "datamodule", None), "class_weights", None)
            self.class_weights = None if weights is None else weights.to(self.device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Mean over the minibatch (T2): the gradient scale, and so the LR, do not depend on batch size.
        # With class weights, hard targets average over the weights of the batch's targets (PyTorch's rule).
        return F.cross_entropy(logits, targets, weight=self.class_weights, label_smoothing=self.hparams.label_smoothing,
                               reduction="mean")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.loss(logits, targets)
        # MixUp/CutMix (A8) give probability targets: F.cross_entropy takes them; accuracy counts the top class.
        self.train_acc(logits, targets.argmax(dim=-1) if targets.is_floating_point() else targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str, accuracy: MulticlassAccuracy) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        self.log(f"{stage}/loss", F.cross_entropy(logits, targets), prog_bar=True, sync_dist=True)
        accuracy(logits, targets)
        self.log(f"{stage}/acc", accuracy, prog_bar=True)
        return logits

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        # Handed to callbacks' on_test_batch_end (EvaluationReport), so they need no second forward pass.
        return {"logits": self._evaluate(batch, "test", self.test_acc), "targets": batch[1]}

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).softmax(dim=-1)

    def configure_optimizers(self):
        # Trainable parameters only: frozen ones (fine-tuning, T4) join later as their own param groups.
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = self.hparams.lr_scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": config}
