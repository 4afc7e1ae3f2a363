"""A3 — random crops/scales: fixed output size; the crop's area stays in the configured scale range."""

from __future__ import annotations

import torch
from augment_helpers import recipe_transforms


def test_A3_random_resized_crop_keeps_size_and_respects_scale(pkg):
    (crop,) = recipe_transforms("augment/random-resized-crop", pkg)
    low, high = crop.scale
    torch.manual_seed(0)
    for size in (28, 32):
        image = torch.rand(1, size, size)
        assert crop(image).shape == (1, size, size)
        areas = []
        for _ in range(300):
            params = crop.make_params([image])
            areas.append(params["height"] * params["width"] / size**2)
        assert min(areas) >= low - 0.05 and max(areas) <= high  # integer rounding of the box only
        assert min(areas) < low + 0.1 and max(areas) > high - 0.1  # the whole range is used


def test_A3_pad_and_crop_is_a_shift_of_at_most_the_padding(pkg):
    (crop,) = recipe_transforms("augment/pad-crop", pkg)
    pad = crop.padding
    torch.manual_seed(0)
    image = torch.rand(1, 32, 32) + 0.5
    padded = torch.nn.functional.pad(image, [pad] * 4)
    windows = {(t, s): padded[:, t:t + 32, s:s + 32] for t in range(2 * pad + 1) for s in range(2 * pad + 1)}
    seen = set()
    for _ in range(60):
        out = crop(image)
        assert out.shape == image.shape
        (match,) = [offset for offset, window in windows.items() if torch.equal(out, window)]
        seen.add(match)
    assert len(seen) > 15  # random shifts, all within the padding (every window above is)
