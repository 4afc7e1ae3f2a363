"""A4 — Random affine with anisotropic stretch and shear: translation, rotation, stretching, shearing.

Card:
    What: one affine warp per image with independent x/y scale factors (stretching), a shear
        angle, a rotation and a translation, each drawn from its range.
    When it helps: objects seen at varied aspect ratios, slants and positions (handwriting,
        documents, cells); the lecture's "random mix of translation, rotation, stretching, shearing".
    Cost: one grid_sample per image.

Why here: torchvision's RandomAffine scales both axes by the same factor; stretching needs
separate x and y factors, which its functional `affine` cannot express either.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ._draw import uniform
from ._warp import PADDING_MODES, affine_matrix, check_range, inverse_affine_grid, sample, warp

__all__ = ["RandomStretchShear", "affine_grid", "stretch_shear"]


def affine_grid(height: int, width: int, stretch_x: float = 1.0, stretch_y: float = 1.0, shear: float = 0.0,
                degrees: float = 0.0, translate: tuple[float, float] = (0.0, 0.0), device=None) -> torch.Tensor:
    """Sampling grid (H, W, 2): each output pixel looks up the inverse-mapped input position.

    The map is `affine_matrix(degrees, shear, stretch_x, stretch_y)` (rotate . shear . stretch, see
    _warp.py) then a shift by `translate`, (dx, dy) as fractions of the width and height.
    """
    matrix = affine_matrix(degrees, shear, stretch_x, stretch_y).to(device)
    shift = torch.tensor([translate[0] * width, translate[1] * height], device=device)
    return inverse_affine_grid(matrix, shift, height, width)


def stretch_shear(image: torch.Tensor, stretch_x: float = 1.0, stretch_y: float = 1.0, shear: float = 0.0,
                  degrees: float = 0.0, translate: tuple[float, float] = (0.0, 0.0),
                  padding_mode: str = "zeros") -> torch.Tensor:
    """Apply one fixed affine warp to `image` (..., H, W)."""
    grid = affine_grid(image.shape[-2], image.shape[-1], stretch_x, stretch_y, shear, degrees, translate, image.device)
    return warp(image, grid, padding_mode)


class RandomStretchShear(v2.Transform):
    """Random affine: per-axis stretch, shear, rotation and translation; masks follow.

    Args:
        stretch_x, stretch_y: ranges of the horizontal and vertical scale factors (drawn independently).
        shear: range of the shear angle in degrees.
        degrees: range of the rotation angle in degrees.
        translate: largest shift as a fraction of (width, height), drawn in [-t, t].
        padding_mode: `zeros`, `border` or `reflection`.

    Example:
        >>> t = RandomStretchShear(stretch_x=(0.8, 1.2), shear=(-10, 10))
        >>> t(torch.rand(1, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    def __init__(
        self,
        stretch_x: tuple[float, float] = (0.8, 1.25),
        stretch_y: tuple[float, float] = (0.8, 1.25),
        shear: tuple[float, float] = (-10.0, 10.0),
        degrees: tuple[float, float] = (-10.0, 10.0),
        translate: tuple[float, float] = (0.1, 0.1),
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        name = "RandomStretchShear"
        self.stretch_x = check_range(name, "stretch_x", stretch_x, low=1e-3)
        self.stretch_y = check_range(name, "stretch_y", stretch_y, low=1e-3)
        self.shear = check_range(name, "shear", shear, low=-80, high=80)  # tan explodes at 90 degrees
        self.degrees = check_range(name, "degrees", degrees, low=-180, high=180)
        self.translate = check_range(name, "translate", translate, low=0, high=1)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{name}(padding_mode={padding_mode!r}): use one of {', '.join(PADDING_MODES)}.")
        self.padding_mode = padding_mode

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        def draw(low: float, high: float) -> float:
            return float(torch.empty(()).uniform_(low, high))

        tx, ty = self.translate
        return {
            "stretch_x": draw(*self.stretch_x), "stretch_y": draw(*self.stretch_y), "shear": draw(*self.shear),
            "degrees": draw(*self.degrees), "translate": (draw(-tx, tx), draw(-ty, ty)),
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.KeyPoints)):
            return inpt
        height, width = v2.functional.get_size(inpt)
        return warp(inpt, affine_grid(height, width, **params), self.padding_mode)

    def batched(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batched form (see batched.py): the parameters of `make_params` drawn per image, one grid_sample."""
        n, (height, width), device = len(images), images.shape[-2:], images.device

        def draw(low: float, high: float) -> torch.Tensor:
            return uniform(n, low, high, generator, device)

        stretch_x, stretch_y, shear, degrees = draw(*self.stretch_x), draw(*self.stretch_y), draw(*self.shear), draw(*self.degrees)
        tx, ty = self.translate
        shift = torch.stack([draw(-tx, tx) * width, draw(-ty, ty) * height], dim=1)
        grid = inverse_affine_grid(affine_matrix(degrees, shear, stretch_x, stretch_y), shift, height, width)
        return sample(images, grid, padding_mode=self.padding_mode)
