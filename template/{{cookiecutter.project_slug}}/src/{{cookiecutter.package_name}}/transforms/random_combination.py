"""A4 — Random combination: k of n transforms, chosen and ordered at random per image ("go crazy").

Card:
    What: for every image, pick `k` distinct transforms out of the list, in random order, and
        apply them; each draws its own magnitude from its range, so every image gets a different
        mix of translation, rotation, stretching, shearing, lens distortion, colour...
    When it helps: small datasets where one fixed pipeline would still leave the net seeing the
        same kinds of nuisance; k bounds how far an image can drift from the data.
    Cost: that of the k transforms picked.

Why here: torchvision's RandomChoice picks one, RandomOrder applies all; RandAugment /
TrivialAugmentWide pick from their own fixed op list, not from yours.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

__all__ = ["RandomCombination"]


class RandomCombination(v2.Transform):
    """Apply `k` transforms drawn without replacement from `transforms`, in random order.

    Args:
        transforms: the candidates (any torchvision v2 transform or ours).
        k: how many to apply per call; 1 <= k <= len(transforms).

    Example:
        >>> from .lens_distortion import LensDistortion
        >>> t = RandomCombination([v2.RandomRotation(10), LensDistortion(), v2.RandomAffine(0, translate=(0.1, 0.1))], k=2)
        >>> t(torch.rand(1, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    def __init__(self, transforms: list[nn.Module], k: int = 2) -> None:
        super().__init__()
        if not transforms:
            raise ValueError("RandomCombination(transforms=[]): give at least one transform to pick from.")
        if not 1 <= k <= len(transforms):
            raise ValueError(f"RandomCombination(k={k}): pick between 1 and {len(transforms)} (the number of transforms).")
        self.transforms = nn.ModuleList(transforms)
        self.k = k

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        for index in torch.randperm(len(self.transforms))[: self.k].tolist():
            sample = self.transforms[index](sample)
        return sample

    def extra_repr(self) -> str:
        return f"k={self.k}"
