"""A3 — Random crops/scales: a random resized crop, and pad-and-crop for small images.

Card:
    What: `RandomScaleCrop` cuts a random part of the image (area fraction in `scale`, aspect
        ratio in `ratio`) and resizes it back to the image's own size (random zoom);
        `PadAndCrop` pads by `padding` pixels and crops back a random window of the original
        size (random translation by up to `padding` pixels, the CIFAR recipe of ResNet papers).
    When it helps: objects at varied scales and positions; pad-and-crop for 28-32 px images
        where a resized crop would throw away too much of the few pixels there are.
    Cost: one crop (+ resize) per image.

Why here: torchvision's RandomResizedCrop and RandomCrop need the output size up front; these
keep the input's size, so a recipe works for every `data.image_size`. The per-sample cropping is
torchvision's (`resized_crop`, `pad`, `crop`), masks included; the batched forms (`batched`, see
batched.py) crop a whole batch with one grid_sample / one gather.
"""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ._draw import box_candidates, first_valid, randint_below
from ._warp import check_range, identity_grid, sample

__all__ = ["PadAndCrop", "RandomScaleCrop"]


def _size(flat_inputs: list[Any]) -> tuple[int, int]:
    first = next(x for x in flat_inputs if isinstance(x, (torch.Tensor, PIL.Image.Image)))
    height, width = TF.get_size(first)
    return height, width


def random_resized_crop(images: torch.Tensor, scale, ratio, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Batched RandomResizedCrop (N, C, H, W) -> (N, C, *size): torchvision's `make_params` per image
    (10 tries, then the central crop with the ratio clamped), then one bilinear grid_sample."""
    n, (height, width), device = len(images), images.shape[-2:], images.device
    w, h = box_candidates(n, height * width, scale, ratio, generator, device)
    first, found = first_valid((w > 0) & (w <= width) & (h > 0) & (h <= height))
    w, h = w.gather(1, first[:, None])[:, 0], h.gather(1, first[:, None])[:, 0]
    in_ratio = width / height  # fallback: the central crop, ratio clamped (as torchvision)
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    top = torch.where(found, randint_below(height - h + 1, generator).float(), (height - h).div(2, rounding_mode="floor"))
    left = torch.where(found, randint_below(width - w + 1, generator).float(), (width - w).div(2, rounding_mode="floor"))
    # The output's pixel grid squeezed onto the box, in grid_sample's [-1, 1] coordinates.
    box_scale = torch.stack([w / width, h / height], dim=1)[:, None, None]
    box_centre = torch.stack([(2 * left + w) / width - 1, (2 * top + h) / height - 1], dim=1)[:, None, None]
    grid = identity_grid(*size, device)[None] * box_scale + box_centre
    return sample(images, grid, padding_mode="border")


def pad_crop_offsets(n: int, padding: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(n, 2) top-left corners (top, left) of the crop in the padded image, uniform in [0, 2 * padding]."""
    return torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=device)


def _fold_index(index: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Where a padded pixel's value comes from, for torchvision's padding modes edge/reflect/symmetric."""
    if mode == "edge":
        return index.clamp(0, size - 1)
    if mode == "reflect":  # ... 2 1 | 0 1 2 ... (edge not repeated)
        index = index.abs()
        return torch.where(index > size - 1, 2 * (size - 1) - index, index)
    index = torch.where(index < 0, -index - 1, index)  # symmetric: ... 1 0 | 0 1 ...
    return torch.where(index > size - 1, 2 * size - 1 - index, index)


class RandomScaleCrop(v2.RandomResizedCrop):
    """Random resized crop back to the input's own size.

    Args:
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).

    Example:
        >>> RandomScaleCrop(scale=(0.5, 1.0))(torch.rand(1, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    def __init__(self, scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        scale = check_range("RandomScaleCrop", "scale", scale, low=1e-3, high=1.0)
        ratio = check_range("RandomScaleCrop", "ratio", ratio, low=1e-3)
        super().__init__(size=1, scale=scale, ratio=ratio, antialias=True)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {**super().make_params(flat_inputs), "output_size": list(_size(flat_inputs))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        params = dict(params)
        size = params.pop("output_size")
        return TF.resized_crop(inpt, **params, size=size, interpolation=self.interpolation, antialias=self.antialias)

    def batched(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batched form (see batched.py): crops drawn per image, resized back to the batch's size."""
        return random_resized_crop(images, self.scale, self.ratio, tuple(images.shape[-2:]), generator)


class PadAndCrop(v2.Transform):
    """Pad by `padding` pixels on every side, then crop a random window of the original size.

    Args:
        padding: pixels added on each side (the largest shift).
        fill: value of the padded pixels (`padding_mode="constant"`); masks are padded with 0.
        padding_mode: `constant`, `edge`, `reflect` or `symmetric`.

    Example:
        >>> PadAndCrop(padding=4)(torch.rand(3, 32, 32)).shape
        torch.Size([3, 32, 32])
    """

    def __init__(self, padding: int = 4, fill: float = 0.0, padding_mode: str = "constant") -> None:
        super().__init__()
        if padding < 0:
            raise ValueError(f"PadAndCrop(padding={padding}): use 0 or more pixels, e.g. 4 for 32x32 images.")
        if padding_mode not in ("constant", "edge", "reflect", "symmetric"):
            raise ValueError(f"PadAndCrop(padding_mode={padding_mode!r}): use constant, edge, reflect or symmetric.")
        self.padding, self.fill, self.padding_mode = padding, fill, padding_mode

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _size(flat_inputs)
        top, left = pad_crop_offsets(1, self.padding)[0].tolist()
        return {"top": top, "left": left, "height": height, "width": width}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        fill = 0 if isinstance(inpt, tv_tensors.Mask) else self.fill
        padded = TF.pad(inpt, padding=[self.padding], fill=fill, padding_mode=self.padding_mode)
        return TF.crop(padded, **params)

    def batched(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batched form (see batched.py): the same corners per image, the padded pixels read with one
        gather from the image itself (exact, every padding mode)."""
        n, channels, height, width = images.shape
        device = images.device
        offsets = pad_crop_offsets(n, self.padding, generator, device) - self.padding
        rows = torch.arange(height, device=device)[None] + offsets[:, :1]  # (N, H) source rows
        cols = torch.arange(width, device=device)[None] + offsets[:, 1:]  # (N, W) source columns
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        if self.padding_mode == "constant":
            rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
        else:
            rows, cols = _fold_index(rows, height, self.padding_mode), _fold_index(cols, width, self.padding_mode)
        source = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, height * width).expand(-1, channels, -1)
        out = images.reshape(n, channels, height * width).gather(2, source).view_as(images)
        if self.padding_mode == "constant":
            out = torch.where(inside[:, None], out, torch.full_like(out, float(self.fill)))
        return out
