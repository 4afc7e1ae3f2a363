"""Shared core of the geometric transforms: resample images (bilinear) and masks (nearest) on a grid."""

from __future__ import annotations

from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

PADDING_MODES = ("zeros", "border", "reflection")


def identity_grid(height: int, width: int, device=None) -> torch.Tensor:
    """(H, W, 2) grid of pixel centres in grid_sample's normalized (x, y) coordinates."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)


def warp(inpt: Any, grid: torch.Tensor, padding_mode: str = "zeros") -> Any:
    """Sample `inpt` (tensor/tv_tensor of shape (..., H, W), or PIL) at `grid` (H, W, 2).

    Masks use nearest sampling so labels stay labels; integer images are rounded back.
    """
    if isinstance(inpt, PIL.Image.Image):
        return TF.to_pil_image(warp(TF.to_image(inpt), grid, padding_mode))
    tensor = inpt.as_subclass(torch.Tensor)
    shape = tensor.shape
    flat = tensor.reshape(-1, 1, *shape[-2:]) if tensor.ndim == 2 else tensor.reshape(-1, *shape[-3:])
    mode = "nearest" if isinstance(inpt, tv_tensors.Mask) else "bilinear"
    out = F.grid_sample(flat.float(), grid.to(flat.device).expand(flat.shape[0], -1, -1, -1), mode=mode,
                        padding_mode=padding_mode, align_corners=False)
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
