"""A6 — Domain-specific (medical) augmentation: segment the object by its mask, move it, resample
the background where it was, blend it in.

Lecture: "Medical: 1. Segment tumor mass 2. Move 3. Resample background tissue 4. Blend".

Card:
    What: the object (mask > 0) is cut out and pasted at a random shift; the hole it leaves is
        refilled with background texture copied from a nearby object-free region of the same
        image (not zeros, not a flat colour); both the refill and the pasted object are blended
        with a Gaussian-feathered alpha, so no hard seam marks where they were. The mask moves
        with the object.
    When it helps: few labelled scans where the lesion's position should not matter but its
        appearance and the tissue around it must stay realistic.
    Cost: a few tensor ops and two small blurs per image.

Why here: torchvision has copy-paste only as a detection reference script, and nothing that
refills the hole; this works on (tv_tensors.Image, tv_tensors.Mask) pairs like any v2 transform.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["MoveAndBlend", "move_and_blend", "segment_bright"]


def _shift(tensor: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift the last two dims by (dy, dx), filling with zeros (no wrap-around)."""
    out = torch.zeros_like(tensor)
    h, w = tensor.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = tensor[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def _dilate(region: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return region
    return F.max_pool2d(region[None, None].float(), 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


def _blur(alpha: torch.Tensor, sigma: float) -> torch.Tensor:
    size = 2 * int(round(2 * sigma)) + 1
    return v2.functional.gaussian_blur(alpha[None], [size, size], [sigma, sigma])[0]


def _feather(region: torch.Tensor, sigma: float) -> torch.Tensor:
    """Soft alpha: 1 inside `region` (the hole must be covered), falling off smoothly outside it."""
    if sigma <= 0:
        return region.float()
    return torch.maximum(region.float(), (2 * _blur(region.float(), sigma)).clamp(0, 1))


def _refill_offset(hole: torch.Tensor, forbidden: torch.Tensor, generator: torch.Generator | None, tries: int) -> tuple[int, int] | None:
    """An offset whose shifted hole lies inside the image and off the object, nearest ones first."""
    h, w = hole.shape
    ys, xs = hole.nonzero(as_tuple=True)
    top, bottom, left, right = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    candidates = [(oy, ox) for oy in range(-top, h - bottom) for ox in range(-left, w - right) if (oy, ox) != (0, 0)]
    if not candidates:
        return None
    order = torch.randperm(len(candidates), generator=generator).tolist()
    # Prefer texture from close by: sort a random sample of candidates by distance.
    sample = sorted((candidates[i] for i in order[:tries]), key=lambda o: o[0] ** 2 + o[1] ** 2)
    for oy, ox in sample:
        if not (_shift(forbidden, -oy, -ox) & hole).any():
            return oy, ox
    return None


def _diffuse(image: torch.Tensor, hole: torch.Tensor, steps: int = 200) -> torch.Tensor:
    """Fallback refill when no object-free source region fits: harmonic inpainting from the border."""
    out, known = image.clone(), (~hole).float()[None]
    out = out * known
    for _ in range(steps):
        total = F.avg_pool2d(out[None], 3, 1, 1, count_include_pad=False)[0]
        weight = F.avg_pool2d(known[None], 3, 1, 1, count_include_pad=False)[0].clamp_min(1e-6)
        out = torch.where(hole[None], total / weight * (weight > 1e-5), image)
        known = torch.maximum(known, (weight > 1e-5).float() * hole[None].float())
    return out


def segment_bright(image: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """(H, W) uint8 mask of the pixels above Otsu's threshold of the channel mean."""
    gray = image.as_subclass(torch.Tensor).float().reshape(-1, *image.shape[-2:]).mean(dim=0)
    low, high = float(gray.min()), float(gray.max())
    if high - low < 1e-6:
        return torch.zeros(gray.shape, dtype=torch.uint8)
    hist = torch.histc(gray, bins=bins, min=low, max=high)
    centres = torch.linspace(low, high, bins)
    weight = hist.cumsum(0)
    mean = (hist * centres).cumsum(0)
    total, total_mean = weight[-1], mean[-1]
    between = (total_mean * weight / total - mean) ** 2 / (weight * (total - weight)).clamp_min(1e-12)
    threshold = centres[int(between[:-1].argmax())]
    return (gray > threshold).to(torch.uint8)


def move_and_blend(image: torch.Tensor, mask: torch.Tensor, shift: tuple[int, int], feather: float = 1.5,
                   generator: torch.Generator | None = None, tries: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the object of `mask` (H, W or 1, H, W; > 0 is object) by `shift` = (dy, dx) pixels.

    Returns the new image (float, same shape) and the shifted mask. The hole is refilled from
    object-free background of the same image at a random nearby offset; `feather` is the
    Gaussian sigma (pixels) of the soft seams (0: hard cut-and-paste).
    """
    plain_mask = mask.as_subclass(torch.Tensor)
    obj = (plain_mask.reshape(plain_mask.shape[-2:]) > 0)
    img = image.as_subclass(torch.Tensor).float()
    dy, dx = shift
    if not obj.any() or (dy, dx) == (0, 0):
        return img, plain_mask.clone()
    hole = _dilate(obj, 1)  # one pixel more: the object's blurred fringe goes too
    offset = _refill_offset(hole, _dilate(obj, 2), generator, tries)
    if offset is None:
        background = _diffuse(img, hole)
    else:
        oy, ox = offset
        patch = _shift(img, -oy, -ox)  # pixel p takes the value at p + offset
        alpha = _feather(hole, feather)
        background = img * (1 - alpha) + patch * alpha
    moved_obj = _shift(obj, dy, dx)
    # A plain blur of the mask: about 1/2 on the object's rim, so its edge fades into the new background.
    alpha = _blur(moved_obj.float(), feather) if feather > 0 else moved_obj.float()
    out = background * (1 - alpha) + _shift(img, dy, dx) * alpha
    # Where the feathered object alpha reaches past the image's shifted-in zeros, keep the background.
    valid = _shift(torch.ones_like(obj), dy, dx)
    out = torch.where(valid, out, background)
    return out, _shift(plain_mask, dy, dx)


class MoveAndBlend(v2.Transform):
    """Move the masked object by a random shift, refill its hole from the background, blend (A6).

    Give an image and a `tv_tensors.Mask` in the same call (the DataModule passes both with
    `data.masks: true` or the `shapes` dataset); the mask follows the object. Without a mask the
    object is segmented as the image's bright part (Otsu's threshold), the lecture's step 1.

    Args:
        max_shift: largest shift as a fraction of the image side, drawn per axis in [-s, s] and
            clipped so the object stays inside the image.
        feather: Gaussian sigma in pixels of the blended seams (0: hard paste).
        p: probability of moving at all.

    Example:
        >>> image = tv_tensors.Image(torch.rand(1, 32, 32) * 0.3 + 0.2)
        >>> mask = tv_tensors.Mask(torch.zeros(32, 32, dtype=torch.uint8)); mask[10:16, 10:16] = 1
        >>> new_image, new_mask = MoveAndBlend(max_shift=0.25)(image, mask)
        >>> int(new_mask.sum())
        36
    """

    def __init__(self, max_shift: float = 0.25, feather: float = 1.5, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < max_shift <= 1.0:
            raise ValueError(f"MoveAndBlend(max_shift={max_shift}): use a fraction of the image side in (0, 1].")
        if feather < 0:
            raise ValueError(f"MoveAndBlend(feather={feather}): use a sigma >= 0 pixels (0 is a hard paste).")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"MoveAndBlend(p={p}): use a probability in [0, 1].")
        self.max_shift, self.feather, self.p = max_shift, feather, p

    def forward(self, *inputs: Any) -> Any:
        flat, spec = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
        masks = [i for i, x in enumerate(flat) if isinstance(x, tv_tensors.Mask)]
        images = [i for i, x in enumerate(flat) if isinstance(x, tv_tensors.Image)]
        if not images:  # a plain tensor is the image, as in the rest of v2
            images = [i for i, x in enumerate(flat) if isinstance(x, torch.Tensor) and not isinstance(x, tv_tensors.TVTensor)][:1]
        if len(masks) > 1 or len(images) != 1:
            raise ValueError(
                f"MoveAndBlend needs one image and at most one tv_tensors.Mask per call, got {len(images)} image(s) "
                f"and {len(masks)} mask(s)."
            )
        if torch.rand(()) >= self.p:
            return tree_unflatten(flat, spec)
        image = flat[images[0]]
        # No mask given: step 1 of the lecture, segment the object (the bright part, Otsu's threshold).
        mask = flat[masks[0]] if masks else tv_tensors.Mask(segment_bright(image))
        obj = mask.as_subclass(torch.Tensor).reshape(mask.shape[-2:]) > 0
        if obj.any():
            h, w = obj.shape
            ys, xs = obj.nonzero(as_tuple=True)
            limit_y, limit_x = int(self.max_shift * h), int(self.max_shift * w)
            low_y, high_y = max(-limit_y, -int(ys.min())), min(limit_y, h - 1 - int(ys.max()))
            low_x, high_x = max(-limit_x, -int(xs.min())), min(limit_x, w - 1 - int(xs.max()))
            dy = int(torch.randint(low_y, high_y + 1, ())) if high_y >= low_y else 0
            dx = int(torch.randint(low_x, high_x + 1, ())) if high_x >= low_x else 0
            new_image, new_mask = move_and_blend(image, mask, (dy, dx), self.feather)
            if not image.is_floating_point():
                new_image = new_image.round().to(image.dtype)
            flat[images[0]] = tv_tensors.wrap(new_image, like=image) if isinstance(image, tv_tensors.TVTensor) else new_image
            if masks:
                flat[masks[0]] = tv_tensors.wrap(new_mask, like=mask)
        return tree_unflatten(flat, spec)
