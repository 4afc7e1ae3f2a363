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
keep the input's size, so a recipe works for every `data.image_size`. The cropping itself is
torchvision's (`resized_crop`, `pad`, `crop`), masks included.
"""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ._warp import check_range

__all__ = ["PadAndCrop", "RandomScaleCrop"]


def _size(flat_inputs: list[Any]) -> tuple[int, int]:
    first = next(x for x in flat_inputs if isinstance(x, (torch.Tensor, PIL.Image.Image)))
    height, width = TF.get_size(first)
    return height, width


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
        return self._call_kernel(TF.resized_crop, inpt, **params, size=size, interpolation=self.interpolation, antialias=self.antialias)


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
        top, left = torch.randint(0, 2 * self.padding + 1, (2,)).tolist()
        return {"top": top, "left": left, "height": height, "width": width}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        fill = 0 if isinstance(inpt, tv_tensors.Mask) else self.fill
        padded = self._call_kernel(TF.pad, inpt, padding=[self.padding], fill=fill, padding_mode=self.padding_mode)
        return self._call_kernel(TF.crop, padded, **params)
