"""A5 — TANDA's transformation functions (TFs): small, fixed-magnitude image operations.

Each TF is one "incremental black-box operation" of the paper: a fixed shift, rotation, zoom or
shear, plus out-of-distribution probes (colour inversion, a 180° rotation) that a learned policy
should learn to avoid on digits. They work on float image tensors `(C, H, W)` or batches
`(N, C, H, W)`; magnitudes are fractions of the image side, so one set serves every image size.

Why here: torchvision's random transforms draw a magnitude per call; TANDA composes fixed ones and
learns which to use, so each TF is a thin wrapper around `torchvision.transforms.v2.functional`.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

__all__ = ["Invert", "Rotate", "Shear", "Shift", "Zoom", "default_tfs"]


class Shift(nn.Module):
    """Translate by `(dx, dy)` fractions of the image width/height (zeros fill the border).

    Example:
        >>> Shift(0.25, 0.0)(torch.eye(4).unsqueeze(0))[0, 0].tolist()
        [0.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, dx: float = 0.0, dy: float = 0.0) -> None:
        super().__init__()
        if not (abs(dx) < 1 and abs(dy) < 1):
            raise ValueError(f"Shift(dx={dx}, dy={dy}): use fractions of the image side in (-1, 1), e.g. 0.1.")
        self.dx, self.dy = dx, dy

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        return F.affine(
            image, angle=0.0, translate=[round(self.dx * w), round(self.dy * h)], scale=1.0, shear=[0.0, 0.0]
        )

    def extra_repr(self) -> str:
        return f"dx={self.dx}, dy={self.dy}"


class Rotate(nn.Module):
    """Rotate by `degrees` (counter-clockwise); multiples of 90 are exact pixel permutations.

    `degrees` is the attribute the A7 identity check reads, so `Rotate(180)` on digits is refused
    unless a policy prunes it (see `TandaAugment.min_probability`).

    Example:
        >>> Rotate(180)(torch.arange(4.0).view(1, 2, 2)).flatten().tolist()
        [3.0, 2.0, 1.0, 0.0]
    """

    def __init__(self, degrees: float = 10.0) -> None:
        super().__init__()
        self.degrees = float(degrees)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.degrees % 90 == 0:
            return torch.rot90(image, int(self.degrees // 90) % 4, dims=(-2, -1))
        return F.affine(
            image,
            angle=self.degrees,
            translate=[0, 0],
            scale=1.0,
            shear=[0.0, 0.0],
            interpolation=F.InterpolationMode.BILINEAR,
        )

    def extra_repr(self) -> str:
        return f"degrees={self.degrees:g}"


class Zoom(nn.Module):
    """Scale about the centre by `scale` (> 1 zooms in).

    Example:
        >>> Zoom(0.5)(torch.ones(1, 8, 8)).sum().item() < 64
        True
    """

    def __init__(self, scale: float = 1.1) -> None:
        super().__init__()
        if not 0.25 <= scale <= 4:
            raise ValueError(f"Zoom(scale={scale}): use a factor in [0.25, 4] such as 0.9 or 1.1.")
        self.scale = scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.affine(
            image,
            angle=0.0,
            translate=[0, 0],
            scale=self.scale,
            shear=[0.0, 0.0],
            interpolation=F.InterpolationMode.BILINEAR,
        )

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class Shear(nn.Module):
    """Shear along x by `degrees`.

    Example:
        >>> Shear(10)(torch.rand(1, 8, 8)).shape
        torch.Size([1, 8, 8])
    """

    def __init__(self, degrees: float = 10.0) -> None:
        super().__init__()
        if not abs(degrees) < 60:
            raise ValueError(f"Shear(degrees={degrees}): use an angle under 60 degrees, e.g. 10.")
        self.shear_degrees = float(degrees)  # not `degrees`: a shear is no rotation for the A7 check

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.affine(
            image,
            angle=0.0,
            translate=[0, 0],
            scale=1.0,
            shear=[self.shear_degrees, 0.0],
            interpolation=F.InterpolationMode.BILINEAR,
        )

    def extra_repr(self) -> str:
        return f"degrees={self.shear_degrees:g}"


class Invert(nn.Module):
    """Colour inversion `1 - x` of images in [0, 1]: an out-of-distribution probe for digits.

    Example:
        >>> Invert()(torch.zeros(1, 2, 2)).sum().item()
        4.0
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.invert(image)


BENIGN = (
    "shift_left",
    "shift_right",
    "shift_up",
    "shift_down",
    "rotate_+10",
    "rotate_-10",
    "zoom_in",
    "zoom_out",
    "shear_+10",
    "shear_-10",
)
OUT_OF_DISTRIBUTION = ("invert", "rotate_180")


def default_tfs(names: list[str] | tuple[str, ...] | None = None) -> dict[str, nn.Module]:
    """The built-in TFs by name (all of them when `names` is None), in the order asked for.

    Benign for digits: `shift_left/right/up/down` (1/16 of the side), `rotate_±10`, `zoom_in/out`
    (x1.1 / x0.9), `shear_±10`. Out-of-distribution probes: `invert`, `rotate_180`.

    Example:
        >>> list(default_tfs(["invert", "shift_left"]))
        ['invert', 'shift_left']
    """
    step = 1 / 16
    known = {
        "shift_left": lambda: Shift(-step, 0.0),
        "shift_right": lambda: Shift(step, 0.0),
        "shift_up": lambda: Shift(0.0, -step),
        "shift_down": lambda: Shift(0.0, step),
        "rotate_+10": lambda: Rotate(10),
        "rotate_-10": lambda: Rotate(-10),
        "zoom_in": lambda: Zoom(1.1),
        "zoom_out": lambda: Zoom(0.9),
        "shear_+10": lambda: Shear(10),
        "shear_-10": lambda: Shear(-10),
        "invert": Invert,
        "rotate_180": lambda: Rotate(180),
    }
    names = list(known) if names is None else list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"TANDA TFs {unknown} are unknown: choose from {', '.join(known)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"TANDA TFs {names}: each name once.")
    return {name: known[name]() for name in names}
