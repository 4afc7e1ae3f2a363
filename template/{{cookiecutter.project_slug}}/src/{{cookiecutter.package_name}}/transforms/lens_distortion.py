"""A4 — Lens distortion: radial barrel (k > 0) or pincushion (k < 0) warp, the lecture's "go crazy" list.

Card:
    What: each output pixel at normalized radius r from the centre samples the input at
        r * (1 + k r^2) (Brown's one-coefficient radial model); k is drawn per image from `k`.
    When it helps: photos from varied cameras/lenses, or as one more geometric nuisance in a
        random combination (A4) so the net stops relying on exact straight-line geometry.
    Cost: one grid_sample per image (the same order as a rotation).

Why here: torchvision has affine, perspective and elastic transforms but no radial lens model.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ._draw import uniform
from ._warp import PADDING_MODES, check_range, identity_grid, sample, warp

__all__ = ["LensDistortion", "lens_distort", "lens_grid"]

# Below -1/3 the radial map r(1 + k r^2) folds back on itself inside the inscribed circle.
MIN_K = -1.0 / 3.0


def lens_grid(height: int, width: int, k: float | torch.Tensor, device=None) -> torch.Tensor:
    """Sampling grid of the radial model r -> r (1 + k r^2); the centre maps to itself for every k.

    A number k gives one grid (H, W, 2); a tensor of shape (N,) one grid per image (N, H, W, 2).
    """
    grid = identity_grid(height, width, device)
    r2 = (grid**2).sum(dim=-1, keepdim=True)
    if torch.is_tensor(k):
        k = k.view(*k.shape, 1, 1, 1)
    return grid * (1 + k * r2)


def lens_distort(image: torch.Tensor, k: float, padding_mode: str = "zeros") -> torch.Tensor:
    """Distort `image` (..., H, W) with coefficient k (0: identity, > 0: barrel, < 0: pincushion)."""
    return warp(image, lens_grid(image.shape[-2], image.shape[-1], k, image.device)[None], padding_mode)


class LensDistortion(v2.Transform):
    """Random radial lens distortion; masks (tv_tensors.Mask) follow with nearest sampling.

    Args:
        k: range of the coefficient, drawn uniformly per call; k > 0 barrel, k < 0 pincushion.
        p: probability of distorting at all.
        padding_mode: what fills pixels sampled from outside: `zeros`, `border` or `reflection`.

    Example:
        >>> t = LensDistortion(k=(-0.2, 0.2))
        >>> t(torch.rand(1, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    def __init__(self, k: tuple[float, float] = (-0.2, 0.2), p: float = 1.0, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.k = check_range("LensDistortion", "k", k, low=MIN_K + 1e-6)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"LensDistortion(p={p}): use a probability in [0, 1].")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"LensDistortion(padding_mode={padding_mode!r}): use one of {', '.join(PADDING_MODES)}.")
        self.p, self.padding_mode = p, padding_mode

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = torch.rand(()) < self.p
        k = float(torch.empty(()).uniform_(*self.k)) if apply else 0.0
        return {"k": k}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["k"] == 0.0 or isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.KeyPoints)):
            return inpt
        height, width = v2.functional.get_size(inpt)
        return warp(inpt, lens_grid(height, width, params["k"])[None], self.padding_mode)

    def batched(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batched form (see batched.py): k drawn per image as in `make_params`, one grid_sample."""
        n, (height, width), device = len(images), images.shape[-2:], images.device
        apply = torch.rand(n, generator=generator, device=device) < self.p
        k = torch.where(apply, uniform(n, *self.k, generator, device), torch.zeros(n, device=device))
        return sample(images, lens_grid(height, width, k, device), padding_mode=self.padding_mode)
