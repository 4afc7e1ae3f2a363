"""E5 — EnsembleModule: test and predict with several checkpoints as one model.

Lecture: "Ensembles" (same model with different initializations; top models of a search; different
checkpoints of one model). The members are checkpoints of this project's ImageClassifier; their
class probabilities are averaged (default), or their logits averaged, or they vote; optionally
weighted by each member's validation accuracy. On GPUs, members that share one architecture run as
a single vmapped call over their stacked parameters (`torch.func`); on CPU one whole-batch call per
member is faster (measured: vmap makes one grouped convolution of the members' convolutions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassCalibrationError

from ..utils.ensembling import (
    METHODS,
    combine,
    member_logits,
    nll,
    normalized_weights,
    stack_states,
    vmap_pays_off,
)
from .checkpoints import AGREE, build_member, checkpoint_score, expand_checkpoints, load_checkpoint


class EnsembleModule(LightningModule):
    """Several ImageClassifier checkpoints evaluated as one model (E5).

    Args:
        checkpoints: checkpoint files and/or folders (a run folder, a snapshot folder, a top-k folder).
        combine: `probs` (average the probabilities; default), `logits` (average the logits), `vote`.
        weights: None (equal), `val` (each member's accuracy on the validation split, measured when
            test/predict starts), or one number per member.

    Example:
        >>> ensemble = EnsembleModule(["runs/my-cnn/a1/checkpoints/best.ckpt", "runs/my-cnn/b2"])  # doctest: +SKIP
        >>> Trainer().test(ensemble, datamodule=ImageDataModule("digits"))                         # doctest: +SKIP
    """

    def __init__(
        self,
        checkpoints: str | Sequence[str],
        combine: str = "probs",
        weights: str | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if combine not in METHODS:
            raise ValueError(f"EnsembleModule(combine={combine!r}): choose one of {', '.join(METHODS)}.")
        if isinstance(weights, str) and weights != "val":
            raise ValueError(f"EnsembleModule(weights={weights!r}): use null, 'val' or one number per member.")
        self.paths = expand_checkpoints(checkpoints)
        loaded = [load_checkpoint(p) for p in self.paths]
        self.members = nn.ModuleList(build_member(p, c) for p, c in zip(self.paths, loaded, strict=True))
        for key in AGREE:
            values = [m.hparams[key] for m in self.members]
            if len(set(values)) > 1:
                listing = ", ".join(f"{p.name} ({p.parent.name}): {v}" for p, v in zip(self.paths, values, strict=True))
                raise ValueError(
                    f"EnsembleModule: members disagree on {key} ({listing}); ensemble checkpoints trained for the same "
                    "classes and input size."
                )
        self.num_classes, self.in_channels, self.image_size = (self.members[0].hparams[k] for k in AGREE)
        self.scores = [checkpoint_score(c) for c in loaded]
        self.combine_method = combine
        self.weights_option = weights
        self.weights = None if weights is None or weights == "val" else normalized_weights(weights, len(self.members))
        # One vmapped call when all members share an architecture (same hyperparameters and tensor shapes).
        same = all(dict(m.hparams) == dict(self.members[0].hparams) for m in self.members)
        self._homogeneous = same and stack_states([m.state_dict() for m in self.members]) is not None
        self._stacked: tuple[torch.device, dict[str, torch.Tensor]] | None = None
        # Expected calibration error of the combined probabilities (15 equal-width bins, Guo et al. 2017):
        # where ensembles are known to gain most.
        self.val_ece, self.test_ece = (MulticlassCalibrationError(self.num_classes, n_bins=15, norm="l1") for _ in range(2))

    def train(self, mode: bool = True):
        return super().train(False)  # members are always evaluated (BatchNorm running statistics, no dropout)

    def member_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of every member, (M, B, C): one vmapped call on GPUs, one call per member elsewhere."""
        if not (self._homogeneous and vmap_pays_off(images.device)):
            return torch.stack([member(images) for member in self.members])
        if self._stacked is None or self._stacked[0] != images.device:
            self._stacked = (images.device, stack_states([m.state_dict() for m in self.members]))
        return member_logits(self.members[0], [], images, self._stacked[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The ensemble's class probabilities, (B, C)."""
        return combine(self.member_logits(images).float(), self.combine_method, self._weights(images.device))

    def _weights(self, device) -> torch.Tensor | None:
        return None if self.weights is None else self.weights.to(device)

    def _evaluate(self, batch, stage: str) -> None:
        images, targets = batch[0], batch[1]
        logits = self.member_logits(images).float()
        probs = combine(logits, self.combine_method, self._weights(images.device))
        size = targets.numel()
        self.log(f"{stage}/acc", (probs.argmax(-1) == targets).float().mean(), batch_size=size, sync_dist=True)
        self.log(f"{stage}/nll", nll(probs, targets).mean(), batch_size=size, sync_dist=True)
        ece = self.test_ece if stage == "test" else self.val_ece
        ece.update(probs, targets)
        self.log(f"{stage}/ece", ece, batch_size=size)
        for index, member in enumerate(logits):
            self.log(f"{stage}/member{index}_acc", (member.argmax(-1) == targets).float().mean(), batch_size=size, sync_dist=True)
            self.log(f"{stage}/member{index}_nll", nll(member.softmax(-1), targets).mean(), batch_size=size, sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images)

    def on_test_start(self) -> None:
        self._weigh_by_validation()

    def on_predict_start(self) -> None:
        self._weigh_by_validation()

    @torch.no_grad()
    def _weigh_by_validation(self) -> None:
        if self.weights_option != "val":
            return
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            raise ValueError("EnsembleModule(weights='val') needs a datamodule with a validation split.")
        correct = torch.zeros(len(self.members), device=self.device)
        count = torch.zeros((), device=self.device)
        for batch in datamodule.val_dataloader():
            images, targets = self.trainer.strategy.batch_to_device(batch, self.device)[:2]
            correct += (self.member_logits(images).argmax(-1) == targets).sum(dim=1)
            count += targets.numel()
        accuracy = correct / count.clamp_min(1)  # every rank sees the whole split here: no reduction needed
        self.weights = normalized_weights(accuracy.cpu(), len(self.members))
        rank_zero_info(f"EnsembleModule: weights from validation accuracy {[round(a, 4) for a in accuracy.tolist()]}")
