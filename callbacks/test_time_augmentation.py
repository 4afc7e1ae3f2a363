"""Evaluation — test-time augmentation (TTA): average the class probabilities over several views of each image.

Lecture: the augmentation chapter's label-preserving transforms, used once more at test time;
AlexNet (Krizhevsky et al. 2012) averaged the softmax of ten crops (five positions and their
mirrors), VGG (Simonyan & Zisserman 2015) flips and dense multi-scale evaluation.

Card:
    What: during `test` and `predict` only (fit and validation stay plain, so checkpoint selection is
        unchanged), every image is also seen mirrored (`horizontal_flip`, `vertical_flip`), shifted by
        `shift` pixels up, down, left and right (4 views, the uncovered border repeating the edge) and
        through any torchvision v2 `transforms` you list (each drawn `draws` times); the softmax
        probabilities of all views, the plain image included, are averaged. `test/acc`, the test loss
        and what `predict` writes are those of the averaged prediction; `test/acc_plain` is the same
        images without TTA, `test/acc_tta` with it (= `test/acc`), `test/tta_gain` their difference.
    When it helps: with views the model was trained to be invariant to (flips and crops/shifts in
        `data.augment`); typically a few tenths of a point up to about a point of accuracy, and a
        lower test loss (an average of probabilities is an ensemble of views).
    Cost: k views = k forward passes per image (k = 1 + the views), i.e. k times the test/predict time;
        the count is printed once when test or predict starts and logged as `test/tta_views`.
        Nothing during training, nothing in the checkpoint.

A7: a view the dataset declares identity-changing (a flip on digits) is refused when fit, test or
predict starts, with the same rules and message as `data.augment` (the DataModule's
`refuse_identity_changing`), unless `allow_identity_changing=true`.

Views act on the model's input batch, after pre-processing: flips and edge-repeating shifts commute
with per-channel pre-processing (P1-P3), so they equal the same views of the raw image; after
whitening (P4) they are an approximation. Photometric transforms (colour jitter) meet normalized
values there: leave them out.

Why a callback, not a module option: TTA is a choice about evaluating a checkpoint, not about the
model: a recipe turns it on for `lightning test` / `predict` of any checkpoint, one trained without
it included, and training, `state_dict` and checkpoints stay untouched. It wraps the module's
`forward` for the duration of test/predict (restored at their end) and returns the log of the
averaged probabilities, so everything downstream of the logits (loss, accuracy, predict's softmax,
the prediction writer) sees the TTA prediction with no change to the module. The module's
`forward` must return logits (ImageClassifier's does; EnsembleModule's returns probabilities).
Why here: torchvision has the transforms but no TTA loop and Lightning has none either; `ttach`
(unmaintained since 2020) averages raw outputs, that is logits, of its own transform set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchvision.transforms import v2
from typing_extensions import override

__all__ = ["TestTimeAugmentation"]


class PixelShift(nn.Module):
    """Moves a batch `(..., H, W)` right by `dx` and down by `dy` whole pixels; the uncovered border
    repeats the edge pixels (replicate padding), so a background stays background."""

    def __init__(self, dx: int, dy: int) -> None:
        super().__init__()
        self.dx, self.dy = dx, dy

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pad = max(abs(self.dx), abs(self.dy))
        height, width = images.shape[-2:]
        padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
        return padded[..., pad - self.dy : pad - self.dy + height, pad - self.dx : pad - self.dx + width]

    def extra_repr(self) -> str:
        return f"dx={self.dx}, dy={self.dy}"


class TestTimeAugmentation(Callback):
    """Average the softmax over views of each test/predict image (module docstring).

    Args:
        horizontal_flip: add the mirrored image.
        vertical_flip: add the upside-down image.
        shift: add the image shifted by this many pixels right, left, down and up (4 views; 0: none).
        transforms: more views: torchvision v2 transforms applied to the model's input batch (one draw of
            a random transform is shared by the batch), e.g. `RandomAffine` or `RandomResizedCrop`.
        draws: how many times each of `transforms` is applied (random ones give a new view each time).
        allow_identity_changing: use views the dataset declares identity-changing (A7) anyway.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[TestTimeAugmentation(horizontal_flip=True, shift=2)])  # 6 views
    """

    __test__ = False  # a callback, not a test class (pytest collects Test* names)

    def __init__(
        self,
        horizontal_flip: bool = False,
        vertical_flip: bool = False,
        shift: int = 0,
        transforms: list[nn.Module] | None = None,
        draws: int = 1,
        allow_identity_changing: bool = False,
    ) -> None:
        if shift < 0:
            raise ValueError(f"TestTimeAugmentation(shift={shift}): use 0 (no shifted views) or a few pixels, e.g. 2.")
        if draws < 1:
            raise ValueError(f"TestTimeAugmentation(draws={draws}): use 1 or more.")
        self.views: list[nn.Module] = []
        if horizontal_flip:
            self.views.append(v2.RandomHorizontalFlip(p=1.0))
        if vertical_flip:
            self.views.append(v2.RandomVerticalFlip(p=1.0))
        if shift:
            self.views += [PixelShift(shift, 0), PixelShift(-shift, 0), PixelShift(0, shift), PixelShift(0, -shift)]
        self.views += [transform for transform in transforms or [] for _ in range(draws)]
        if not self.views:
            raise ValueError("TestTimeAugmentation(): no views besides the plain image; set horizontal_flip, "
                             "vertical_flip, shift (pixels) or transforms.")
        self.shift, self.allow_identity_changing = shift, allow_identity_changing
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None  # (plain logits, TTA probabilities) of the last batch
        self._announced = False

    @property
    def num_views(self) -> int:
        """Forward passes per image: the plain image and every view."""
        return 1 + len(self.views)

    @torch.no_grad()
    def average(self, forward: Callable[..., torch.Tensor], images: torch.Tensor, *args: Any,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of the plain images, the mean over all views of the softmax probabilities), one forward per view."""
        plain = forward(images, *args, **kwargs)
        probabilities = [plain.float().softmax(-1)]
        probabilities += [forward(view(images), *args, **kwargs).float().softmax(-1) for view in self.views]
        return plain, torch.stack(probabilities).mean(0)

    def check_data(self, datamodule: Any) -> None:
        """Refuse views that change what this dataset's images show (A7) or shift by half an image or more.
        The project's CLI calls it before anything runs (one `error:` line); `setup` calls it for Python users."""
        refuse = getattr(datamodule, "refuse_identity_changing", None)  # the project's DataModule (A7 rules)
        if refuse is not None and not self.allow_identity_changing:
            refuse(self.views, "TestTimeAugmentation", "TestTimeAugmentation.allow_identity_changing")
        size = getattr(datamodule, "image_size", None)
        if isinstance(size, int) and 2 * self.shift >= size:
            raise ValueError(f"TestTimeAugmentation(shift={self.shift}): shift by less than half of the {size}-pixel "
                             "images, e.g. 2.")

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.check_data(trainer.datamodule)  # at fit too: the views will meet this dataset when the run is tested

    def _wrap(self, pl_module: LightningModule, stage: str) -> None:
        if not self._announced:
            rank_zero_info(f"TestTimeAugmentation: {self.num_views} views per image (plain, "
                           f"{', '.join(repr(v) for v in self.views)}): {self.num_views}x the forward passes of a plain {stage}.")
            self._announced = True
        plain_forward = pl_module.forward

        def forward(images: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            self._batch = self.average(plain_forward, images, *args, **kwargs)
            probabilities = self._batch[1]
            return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()  # softmax of it = the average

        pl_module.forward = forward  # an instance attribute over the class's method, removed by _unwrap

    def _unwrap(self, pl_module: LightningModule) -> None:
        vars(pl_module).pop("forward", None)
        self._batch = None

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._wrap(pl_module, "test")

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._wrap(pl_module, "predict")

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._counts = torch.zeros(3, device=pl_module.device)  # plain correct, TTA correct, images

    @override
    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._batch is None:
            return
        (plain, probabilities), targets = self._batch, batch[1]
        self._counts += torch.stack([(plain.argmax(-1) == targets).sum(), (probabilities.argmax(-1) == targets).sum(),
                                     torch.tensor(targets.numel(), device=targets.device)]).to(self._counts)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        plain, tta, images = trainer.strategy.reduce(self._counts, reduce_op="sum")  # the same images for both
        plain, tta = plain / images.clamp_min(1), tta / images.clamp_min(1)
        pl_module.log_dict({"test/acc_plain": plain, "test/acc_tta": tta, "test/tta_gain": tta - plain,
                            "test/tta_views": float(self.num_views)}, sync_dist=True)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._unwrap(pl_module)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._unwrap(pl_module)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._unwrap(pl_module)
