"""Shared core of the geometric transforms, per-sample and batched: the pixel grid, the affine map,
and resampling of images (bilinear) and masks (nearest) on a grid.

Every geometric formula lives here once: `identity_grid` (the pixel grid), `affine_matrix`
(rotation . shear . stretch) and `inverse_affine_grid` (where each output pixel samples the input).
A transform's per-sample form calls them with numbers and `warp`s one image; its batched form
(`batched`, see batched.py) calls them with one value per image and `sample`s the whole batch.
"""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

PADDING_MODES = ("zeros", "border", "reflection")


def identity_grid(height: int, width: int, device=None) -> torch.Tensor:
    """(H, W, 2) grid of pixel centres in grid_sample's normalized (x, y) coordinates.

    Times (width / 2, height / 2) it is the pixel grid about the image centre, in pixels.
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)


def affine_matrix(degrees, shear=0.0, stretch_x=1.0, stretch_y=1.0, shear_y=0.0) -> torch.Tensor:
    """Forward 2x2 map(s) in pixel units about the centre (x right, y down): rotate . shear . stretch.

    rotate = [[cos, -sin], [sin, cos]], shear = [[1, 0], [tan(shear_y), 1]] @ [[1, tan(shear)], [0, 1]],
    stretch = diag(stretch_x, stretch_y). A shear of s degrees turns a vertical line by s degrees
    (x += tan(s) * y). Numbers give one (2, 2) matrix; tensors of shape (N,) give (N, 2, 2).
    torchvision's affine (angle a, scale s, shear (sx, sy)) is `affine_matrix(a, -sx, s, s, -sy)`.
    """
    values = (degrees, shear, stretch_x, stretch_y, shear_y)
    like = next((v for v in values if torch.is_tensor(v)), torch.zeros((), dtype=torch.float64))  # numbers: float64
    rad, shear_x, sx, sy, shear_y = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in values))
    rad, tan_x, tan_y = torch.deg2rad(rad), torch.tan(torch.deg2rad(shear_x)), torch.tan(torch.deg2rad(shear_y))
    cos, sin = torch.cos(rad), torch.sin(rad)
    # [[cos, -sin], [sin, cos]] @ [[1, tan_x], [tan_y, 1 + tan_x tan_y]] @ diag(sx, sy)
    a, b = cos - sin * tan_y, cos * tan_x - sin * (1 + tan_x * tan_y)
    c, d = sin + cos * tan_y, sin * tan_x + cos * (1 + tan_x * tan_y)
    return torch.stack([torch.stack([a * sx, b * sy], -1), torch.stack([c * sx, d * sy], -1)], dim=-2)


def inverse_affine_grid(matrix: torch.Tensor, shift: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sampling grid (..., H, W, 2) of the map pixel -> matrix @ pixel + shift (pixels about the centre):
    each output pixel looks up matrix^-1 @ (pixel - shift). `matrix` (..., 2, 2), `shift` (..., 2)."""
    device = matrix.device
    half = torch.tensor([width / 2, height / 2], device=device)
    a, b, c, d = matrix.flatten(-2).unbind(-1)  # the 2x2 inverse in closed form: no solver, no device sync
    inverse = (torch.stack([d, -b, -c, a], -1) / (a * d - b * c)[..., None]).unflatten(-1, (2, 2)).float()
    pixels = identity_grid(height, width, device) * half - shift.float()[..., None, None, :]
    source = torch.einsum("...ij,...hwj->...hwi", inverse, pixels)
    return source / half


def sample(images: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
           fill: float | None = None) -> torch.Tensor:
    """grid_sample of float images (N, C, H, W) at grid (N, H', W', 2), with torchvision's `fill`
    semantics (a constant outside the image) when `fill` is a non-zero number."""
    if fill is None or fill == 0:
        return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    ones = torch.ones_like(images[:, :1])
    out, inside = F.grid_sample(torch.cat([images, ones], 1), grid, mode=mode, padding_mode="zeros",
                                align_corners=False).split([images.shape[1], 1], dim=1)
    if mode == "nearest":
        return torch.where(inside < 0.5, torch.full_like(out, fill), out)
    return (out - fill) * inside + fill


def warp(inpt: Any, grid: torch.Tensor, padding_mode: str = "zeros") -> Any:
    """Sample `inpt` (tensor/tv_tensor of shape (..., H, W), or PIL) at `grid` (1, H, W, 2).

    Masks use nearest sampling so labels stay labels; integer images are rounded back.
    """
    if isinstance(inpt, PIL.Image.Image):
        return TF.to_pil_image(warp(TF.to_image(inpt), grid, padding_mode))
    tensor = inpt.as_subclass(torch.Tensor)
    shape = tensor.shape
    flat = tensor.reshape(-1, 1, *shape[-2:]) if tensor.ndim == 2 else tensor.reshape(-1, *shape[-3:])
    mode = "nearest" if isinstance(inpt, tv_tensors.Mask) else "bilinear"
    out = sample(flat.float(), grid.to(flat.device).expand(flat.shape[0], -1, -1, -1), mode, padding_mode)
    if not tensor.is_floating_point():
        out = out.round().clamp(torch.iinfo(tensor.dtype).min, torch.iinfo(tensor.dtype).max)
    out = out.to(tensor.dtype).reshape(shape)
    return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def check_range(owner: str, name: str, value, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """Validate a (min, max) pair; the message names the argument, the value and the fix."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}({name}={value!r}): give a pair (min, max) of numbers.") from None
    if lo > hi:
        raise ValueError(f"{owner}({name}={value!r}): min is above max; swap them.")
    if (low is not None and lo < low) or (high is not None and hi > high):
        raise ValueError(f"{owner}({name}={value!r}): keep both ends within [{low}, {high}].")
    return lo, hi
