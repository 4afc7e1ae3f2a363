"""A7 — Be careful: augmentation must not change the object's identity ("rotate can not be used").

Card:
    What: each dataset declares which transforms change what its images show (digits: a
        mirrored 2 is no digit, a 6 turned upside down is a 9); a configuration that enables
        one fails at start with a message naming the transform, unless
        `data.allow_identity_changing: true` says it is meant. The audit command (`audit.py`)
        measures the same thing on a trained model.
    When it helps: always; it costs a silent accuracy loss when forgotten.
    Cost: nothing at run time; the check walks the configured transforms once.

Why here: no library knows which of its transforms are label-preserving for *your* data.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from torchvision.transforms import v2

__all__ = ["identity_changing", "leaf_transforms", "max_rotation"]


def leaf_transforms(transforms) -> Iterator[nn.Module]:
    """Every transform inside containers (Compose, RandomApply, RandomChoice, RandomOrder, ours)."""
    for transform in transforms:
        children = getattr(transform, "transforms", None)
        if isinstance(children, (list, tuple, nn.ModuleList)):
            yield from leaf_transforms(children)
        else:
            yield transform


def max_rotation(transform: nn.Module) -> float:
    """The largest rotation (degrees) a transform can apply."""
    degrees = getattr(transform, "degrees", None)
    if isinstance(transform, v2.TrivialAugmentWide):
        return 135.0  # its Rotate op spans 0..135 degrees
    if isinstance(transform, v2.RandAugment):
        return 30.0 * transform.magnitude / max(transform.num_magnitude_bins - 1, 1)
    if isinstance(transform, v2.AutoAugment):
        return 30.0
    if isinstance(degrees, (int, float)):
        return abs(float(degrees))
    if isinstance(degrees, (list, tuple)) and degrees:
        return max(abs(float(d)) for d in degrees)
    return 0.0


def identity_changing(transforms, rules: dict) -> list[str]:
    """Reasons why `transforms` change identity under a dataset's `rules`; empty when safe.

    `rules` (a `DatasetSpec.identity_changing` in datasets.py) may hold `horizontal_flip` / `vertical_flip`
    (a reason each) and `max_rotation` ((degrees, reason)).

    Example:
        >>> identity_changing([v2.RandomHorizontalFlip()], {"horizontal_flip": "mirrored digits are no digits"})
        ['RandomHorizontalFlip(p=0.5): mirrored digits are no digits']
    """
    reasons = []
    for transform in leaf_transforms(transforms):
        name = repr(transform).replace("\n", " ")
        if isinstance(transform, v2.RandomHorizontalFlip) and transform.p > 0 and "horizontal_flip" in rules:
            reasons.append(f"{name}: {rules['horizontal_flip']}")
        elif isinstance(transform, v2.RandomVerticalFlip) and transform.p > 0 and "vertical_flip" in rules:
            reasons.append(f"{name}: {rules['vertical_flip']}")
        elif "max_rotation" in rules:
            limit, why = rules["max_rotation"]
            if max_rotation(transform) > limit:
                reasons.append(f"{name}: rotates up to {max_rotation(transform):g} degrees, over {limit:g} ({why})")
    return reasons
