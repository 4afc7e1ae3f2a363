"""Shared core of the initialization callbacks (tricks I1-I4 of docs/tricks.md, orthogonal, LSUV).

Which layers an init scheme touches, and when:
    - Conv1d/2d/3d and Linear layers (weights by the scheme, biases to zero); norm layers, PReLU
      slopes and everything else keep their own defaults.
    - Never a layer loaded from pretrained weights: a backbone builder marks such modules with the
      attribute `PRETRAINED_ATTR` (the generated `backbones.py` does it for torchvision weights),
      and any module name starting with one of `exclude` is skipped too (use it for weights you
      load yourself).
    - Nothing at all when the LightningModule says its weights were loaded (`pretrained_source`,
      set by the project's ImageClassifier for `pretrained_checkpoint`) but no layer is marked.
    - Once, at fit start, and never on resume: when `trainer.ckpt_path` is set the checkpoint's
      weights are the ones to keep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

# Set (to the weights' name, e.g. "DEFAULT") on every module a backbone builder loaded from
# pretrained weights; the generated `backbones.py` writes the same literal.
PRETRAINED_ATTR = "pretrained_weights"
INIT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def is_pretrained(module: nn.Module) -> bool:
    return getattr(module, PRETRAINED_ATTR, None) is not None


def init_targets(model: nn.Module, exclude: Sequence[str] = (), skip_pretrained: bool = True) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every Conv/Linear layer an init scheme may touch, in registration order."""
    targets = []
    for name, module in model.named_modules():
        if not isinstance(module, INIT_LAYERS):
            continue
        if any(name == prefix or name.startswith(prefix + ".") for prefix in exclude):
            continue
        if skip_pretrained and is_pretrained(module):
            continue
        targets.append((name, module))
    return targets


@torch.no_grad()
def apply_init(
    model: nn.Module,
    init_weight: Callable[[torch.Tensor], object],
    exclude: Sequence[str] = (),
    skip_pretrained: bool = True,
    bias: float = 0.0,
) -> list[str]:
    """Initialize every target layer's weight with `init_weight(weight)` (in place) and its bias
    with the constant `bias`; returns the names of the layers touched."""
    names = []
    for name, layer in init_targets(model, exclude, skip_pretrained):
        init_weight(layer.weight)
        if layer.bias is not None:
            layer.bias.fill_(bias)
        names.append(name)
    return names


def check_exclude(owner: str, exclude: Iterable[str] | None) -> list[str]:
    exclude = list(exclude or [])
    if any(not isinstance(p, str) or not p for p in exclude):
        raise ValueError(f"{owner}(exclude={exclude}): give module-name prefixes as non-empty strings, e.g. ['backbone.fc'].")
    return exclude


class InitCallback(Callback):
    """Base of the init callbacks: applies `self.initialize(model)` once at fit start, on every
    rank the same weights (rank 0's are broadcast), and never when resuming from a checkpoint.

    Init runs in `on_fit_start`, after Lightning has restored a checkpoint (so `trainer.ckpt_path`
    tells a resume from a fresh run); strategies that restore only after setup (DeepSpeed) load
    the checkpoint's weights over the init anyway.

    Reads the module's `pretrained_source` and its layers' `pretrained_weights` (`protocol.TrickModule`).
    """

    def __init__(self, exclude: Sequence[str] | None = None, skip_pretrained: bool = True) -> None:
        self.exclude = check_exclude(type(self).__name__, exclude)
        self.skip_pretrained = skip_pretrained
        self.initialized: list[str] = []
        self._done: set[int] = set()

    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        name = type(self).__name__
        if trainer.ckpt_path:
            rank_zero_info(f"{name}: resuming from {trainer.ckpt_path}; the checkpoint's weights are kept (no re-init).")
            return
        if id(pl_module) in self._done:  # a second fit() of the same model continues its training
            return
        source = getattr(pl_module, "pretrained_source", None)
        if source and self.skip_pretrained and not any(is_pretrained(m) for m in pl_module.modules()):
            # The project's ImageClassifier records where its weights came from (e.g. a
            # pretrained_checkpoint) without saying which layers were loaded: keep them all.
            rank_zero_warn(
                f"{name}: the model's weights come from {source}, and no layer is marked as loaded "
                f"(attribute {PRETRAINED_ATTR!r}), so nothing is re-initialized. Mark the loaded layers, "
                f"or pass {name}(skip_pretrained=False, exclude=[...]) to init the others."
            )
            self._done.add(id(pl_module))
            return
        self.initialized = self.initialize(pl_module, trainer)
        if dist.is_available() and dist.is_initialized():
            # Random init (and LSUV's per-rank batch) differ between ranks; rank 0's weights win.
            with torch.no_grad():
                for layer in (m for _, m in init_targets(pl_module, self.exclude, self.skip_pretrained)):
                    for param in layer.parameters(recurse=False):
                        dist.broadcast(param.data, src=0)
        self._done.add(id(pl_module))
        rank_zero_info(f"{name}: initialized {len(self.initialized)} Conv/Linear layers.")
