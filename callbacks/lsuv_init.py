"""I3/I4 extra — LSUV: layer-sequential unit-variance init, measured on one data batch.

Mishkin & Matas 2016 (All you need is a good init): start from an orthogonal init, then, layer by
layer from the input, forward one real batch and divide the layer's weights by the std of its
output until that std is 1. It calibrates what I3/I4 only estimate from fan-in, whatever the
activation (Maxout, PReLU, ...) and whatever the data's scale.

Card:
    What: orthogonal init, then each Conv/Linear layer in forward order rescaled so its output
        on one training batch has unit variance (to `tolerance`, at most `max_iters` passes).
    When it helps: deep nets without BatchNorm, unusual activations, unnormalized inputs.
    Cost: up to `max_iters` forward passes of one batch per layer, once before training.

Why here: neither torch nor Lightning has it. Runs in eval mode (dropout off, BatchNorm running
statistics untouched) on the first batch of the training loader.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from ..utils.probe import probe_forward
from .init_schemes import InitCallback, init_targets, orthogonal_init_

__all__ = ["LSUVInit", "lsuv_init_"]


def _images(batch) -> torch.Tensor:
    """The input tensor of a batch: a tensor, the first item of (images, targets), or a dict's 'image'."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch:
        return _images(batch[0])
    if isinstance(batch, dict) and batch:
        return _images(batch.get("image", next(iter(batch.values()))))
    raise ValueError(f"LSUVInit: cannot find the input tensor in a batch of type {type(batch).__name__}.")


def _output_std(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> float:
    return output.float().std().item()


@torch.no_grad()
def lsuv_init_(
    model: nn.Module,
    batch: torch.Tensor,
    tolerance: float = 0.05,
    max_iters: int = 10,
    exclude: Sequence[str] = (),
    skip_pretrained: bool = True,
) -> dict[str, float]:
    """Orthogonal init, then rescale each target layer (forward order) to unit output std on `batch`.

    Returns {layer name: output std after the last pass}.
    """
    orthogonal_init_(model, 1.0, exclude, skip_pretrained)
    layers = dict(init_targets(model, exclude, skip_pretrained))
    # Every probe runs in eval mode: dropout off, BatchNorm running statistics untouched.
    order = [name for name, _ in probe_forward(model, batch, layers)]  # the order the layers run in
    stds: dict[str, float] = {}
    for name in dict.fromkeys(order):
        layer = layers[name]
        for _ in range(max_iters):
            std = probe_forward(model, batch, {name: layer}, _output_std)[0][1]  # its first call
            if not math.isfinite(std) or std == 0:
                break  # a dead layer (all zero output) cannot be rescaled
            if abs(std**2 - 1.0) < tolerance:
                break
            layer.weight.div_(std)
        stds[name] = std
    return stds


class LSUVInit(InitCallback):
    """Initialize Conv/Linear layers by LSUV on one training batch at fit start.

    Args:
        tolerance: stop rescaling a layer when |variance - 1| is below this.
        max_iters: passes per layer at most.
        exclude: module-name prefixes to leave alone.
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[LSUVInit()])
    """

    def __init__(
        self, tolerance: float = 0.05, max_iters: int = 10, exclude: Sequence[str] | None = None, skip_pretrained: bool = True
    ) -> None:
        super().__init__(exclude, skip_pretrained)
        if not 0 < tolerance < 1:
            raise ValueError(f"LSUVInit(tolerance={tolerance}): use a value in (0, 1), e.g. 0.05.")
        if max_iters < 1:
            raise ValueError(f"LSUVInit(max_iters={max_iters}): use at least 1 pass per layer, e.g. 10.")
        self.tolerance = tolerance
        self.max_iters = max_iters
        self.stds: dict[str, float] = {}

    @staticmethod
    def first_batch(trainer: Trainer) -> torch.Tensor:
        if trainer.datamodule is not None:
            loader = trainer.datamodule.train_dataloader()
        else:  # loaders passed to fit(); Lightning sets trainer.train_dataloader only after on_fit_start
            loader = trainer.fit_loop._data_source.dataloader()
        return _images(next(iter(loader)))

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        batch = self.first_batch(trainer).to(next(model.parameters()).device)
        self.stds = lsuv_init_(model, batch, self.tolerance, self.max_iters, self.exclude, self.skip_pretrained)
        return [name for name, _ in init_targets(model, self.exclude, self.skip_pretrained)]
