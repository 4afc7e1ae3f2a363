"""A8 — MixUp / CutMix at batch level (extras users expect beside random erasing and label smoothing).

Card:
    What: each training batch is mixed with a shuffled copy of itself, either by a convex
        combination of the images (MixUp, Zhang et al. 2018) or by pasting a random box of the
        other image (CutMix, Yun et al. 2019); the targets become the same convex combination of
        the one-hot labels (weight lambda ~ Beta(alpha, alpha), or the box's area share).
    When it helps: over-confident nets and noisy or small datasets; pairs well with label smoothing.
    Cost: one extra pass over the batch; the loss gets probability targets (F.cross_entropy
        accepts them; training accuracy counts the dominant class).

Why here: the transforms are torchvision's (`v2.MixUp`, `v2.CutMix`, used as they are); this
file only turns hard labels into one-hot targets and picks one of the configured mixers per
batch, as torchvision's docs recommend, after the batch is on the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["mix_batch"]


def mix_batch(images: torch.Tensor, targets: torch.Tensor, mixers: list[nn.Module], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one of `mixers` (picked uniformly) to the batch; returns images and probability targets.

    Example:
        >>> from torchvision.transforms import v2
        >>> images, targets = mix_batch(torch.rand(8, 1, 32, 32), torch.arange(8), [v2.MixUp(alpha=1.0)], 10)
        >>> targets.shape, bool(torch.allclose(targets.sum(dim=1), torch.ones(8)))
        (torch.Size([8, 10]), True)
    """
    if not mixers:
        return images, targets
    if targets.ndim == 1:
        targets = F.one_hot(targets.long(), num_classes).to(images.dtype)
    mixer = mixers[int(torch.randint(len(mixers), ()))]
    return mixer(images, targets)
