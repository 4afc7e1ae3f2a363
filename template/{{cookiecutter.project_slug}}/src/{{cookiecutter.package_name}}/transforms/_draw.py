"""Random draws of the transforms' batched forms: one value per image, from the batch's generator."""

from __future__ import annotations

import math

import torch


def uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    """(n,) floats uniform in [low, high)."""
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def randint_below(high: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per row an integer in [0, high) (high >= 1), like torch.randint(0, high) row by row."""
    high = high.float()
    draw = (torch.rand(high.shape, generator=generator, device=high.device) * high).floor()
    return torch.minimum(draw, high - 1).long()


def first_valid(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first True per row of (N, tries), and whether any was True."""
    return valid.int().argmax(dim=1), valid.any(dim=1)


def box_candidates(n: int, area: int, scale, ratio, generator: torch.Generator, device,
                   tries: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's box draw of RandomResizedCrop and RandomErasing, `tries` per image at once:
    area fraction uniform in `scale`, log aspect ratio uniform in log(`ratio`); returns the rounded
    (sqrt(area * aspect), sqrt(area / aspect)), each (n, tries)."""
    target = area * uniform(n * tries, *scale, generator, device).view(n, tries)
    aspect = torch.exp(uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), generator, device).view(n, tries))
    return torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
