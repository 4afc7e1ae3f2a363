"""A (speed) — Batched on-device augmentation: the `data.augment` list applied to a whole batch at once.

Card:
    What: small datasets (digits, MNIST, CIFAR) live as ONE tensor on the training device
        (`data.device_augment: true`); each training batch is gathered from it and augmented
        there: per-sample random parameters are drawn as tensors and applied with batched ops
        (flips with `torch.where`, crops and affine/stretch/shear/lens warps with one
        `grid_sample` over a per-sample grid, colour jitter as arithmetic, erasing with masks).
        No per-sample Python, no DataLoader workers.
    When it helps: small in-memory datasets, where per-sample transforms in DataLoader workers
        cost more than the model's step (always on 2 CPU cores; on a GPU even more so).
        Large on-disk data keeps the per-sample path (`device_augment: false`, the default).
    Cost: the training split in device memory (CIFAR-10 as uint8: 150 MB).

Each supported transform has a counterpart here drawing its parameters from the SAME
distribution as its per-sample version (torchvision's `make_params`, or ours), so both paths
train on the same data distribution (tests/test_A_device_augment.py compares them). A transform
of your own joins by defining `batched(images, generator) -> images` on (N, C, H, W) floats.

Why here: torchvision v2 transforms draw one set of parameters per call (a batch gets the same
flip, the same crop); Kornia would add a dependency. These are short, on `grid_sample`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

from .crops import PadAndCrop, RandomScaleCrop
from .lens_distortion import LensDistortion
from .random_combination import RandomCombination
from .stretch_shear import RandomStretchShear

__all__ = ["BatchedAugment", "batched_transform", "preprocess_batch"]

BatchFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class UnsupportedTransformError(ValueError):
    """A transform in `data.augment` has no batched counterpart."""


# ----------------------------------------------------------------------------- helpers
def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def _randint(high: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per-row integer in [0, high) (high >= 1), like torch.randint(0, high) row by row."""
    high = high.float()
    draw = (torch.rand(high.shape, generator=g, device=high.device) * high).floor()
    return torch.minimum(draw, high - 1).long()


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)


def _on_subset(x: torch.Tensor, mask: torch.Tensor, fn: BatchFn, g: torch.Generator) -> torch.Tensor:
    """Apply `fn` to the rows where `mask` holds (only those rows are computed)."""
    index = mask.nonzero().squeeze(1)
    if index.numel() == 0:
        return x
    out = x.clone()
    out[index] = fn(x[index], g)
    return out


def _first_valid(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first True per row of (N, tries), and whether any was True."""
    return valid.int().argmax(dim=1), valid.any(dim=1)


def _pixel_grid(height: int, width: int, device) -> torch.Tensor:
    """(H, W, 2) pixel-centre (x, y) coordinates about the image centre, in pixels."""
    xs = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2
    ys = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)


def _sample(x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
            fill: float | None = None) -> torch.Tensor:
    """grid_sample with torchvision's `fill` semantics (a constant outside the image)."""
    if fill is None or fill == 0:
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    ones = torch.ones_like(x[:, :1])
    out, inside = F.grid_sample(torch.cat([x, ones], 1), grid, mode=mode, padding_mode="zeros",
                                align_corners=False).split([x.shape[1], 1], dim=1)
    if mode == "nearest":
        return torch.where(inside < 0.5, torch.full_like(out, fill), out)
    return (out - fill) * inside + fill


def _warp_matrices(x: torch.Tensor, inverse: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Grid (N, H, W, 2) sampling at inverse @ (pixel - shift), all in pixels about the centre."""
    height, width = x.shape[-2:]
    pixels = _pixel_grid(height, width, x.device)[None] - shift[:, None, None, :]
    source = torch.einsum("nij,nhwj->nhwi", inverse, pixels)
    return source / torch.tensor([width / 2, height / 2], device=x.device)


# ----------------------------------------------------------------------------- counterparts
def _flip(dim: int) -> Callable[[nn.Module], BatchFn]:
    def make(t: nn.Module) -> BatchFn:
        def fn(x, g):
            return _where(torch.rand(len(x), generator=g, device=x.device) < t.p, x.flip(dim), x)

        return fn

    return make


def _resized_crop(t: v2.RandomResizedCrop) -> BatchFn:
    """torchvision's RandomResizedCrop.make_params (10 tries, central fallback), then one grid_sample."""
    scale, ratio = t.scale, t.ratio
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    keep_size = isinstance(t, RandomScaleCrop)

    def fn(x, g):
        n, (height, width), dev = len(x), x.shape[-2:], x.device
        area = height * width
        target = area * _uniform(n * 10, *scale, g, dev).view(n, 10)
        aspect = torch.exp(_uniform(n * 10, *log_ratio, g, dev).view(n, 10))
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first, found = _first_valid(valid)
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
        top = torch.where(found, _randint(height - h + 1, g).float(), (height - h).div(2, rounding_mode="floor"))
        left = torch.where(found, _randint(width - w + 1, g).float(), (width - w).div(2, rounding_mode="floor"))
        out_h, out_w = (height, width) if keep_size else tuple(t.size)
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 1, 1] = w / width, h / height
        theta[:, 0, 2], theta[:, 1, 2] = (2 * left + w) / width - 1, (2 * top + h) / height - 1
        grid = F.affine_grid(theta, [n, x.shape[1], out_h, out_w], align_corners=False)
        return _sample(x, grid, padding_mode="border")

    return fn


def _reflect_index(index: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if mode == "edge":
        return index.clamp(0, size - 1)
    if mode == "reflect":  # ... 2 1 | 0 1 2 ... (edge not repeated)
        index = index.abs()
        return torch.where(index > size - 1, 2 * (size - 1) - index, index)
    index = torch.where(index < 0, -index - 1, index)  # symmetric: ... 1 0 | 0 1 ...
    return torch.where(index > size - 1, 2 * size - 1 - index, index)


def _pad_and_crop(t: PadAndCrop) -> BatchFn:
    """Integer shifts by gathering pixels: exact, any padding mode."""
    pad = t.padding

    def fn(x, g):
        n, (height, width), dev = len(x), x.shape[-2:], x.device
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g, device=dev) - pad
        rows = torch.arange(height, device=dev)[None] + offsets[:, :1]  # (N, H)
        cols = torch.arange(width, device=dev)[None] + offsets[:, 1:]  # (N, W)
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        if t.padding_mode == "constant":
            rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
        else:
            rows, cols = _reflect_index(rows, height, t.padding_mode), _reflect_index(cols, width, t.padding_mode)
        source = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, height * width).expand(-1, x.shape[1], -1)
        out = x.reshape(n, x.shape[1], height * width).gather(2, source).view_as(x)  # one gather, no Python loop
        if t.padding_mode == "constant":
            out = torch.where(inside[:, None], out, torch.full_like(out, float(t.fill)))
        return out

    return fn


def _lens(t: LensDistortion) -> BatchFn:
    def fn(x, g):
        n, (height, width), dev = len(x), x.shape[-2:], x.device
        apply = torch.rand(n, generator=g, device=dev) < t.p
        k = torch.where(apply, _uniform(n, *t.k, g, dev), torch.zeros(n, device=dev))
        base = _pixel_grid(height, width, dev) / torch.tensor([width / 2, height / 2], device=dev)
        r2 = (base**2).sum(-1, keepdim=True)
        grid = base[None] * (1 + k.view(n, 1, 1, 1) * r2[None])
        return _sample(x, grid, padding_mode=t.padding_mode)

    return fn


def _stretch_shear(t: RandomStretchShear) -> BatchFn:
    """RandomStretchShear's forward map rotate . shear . stretch, inverted per sample."""

    def fn(x, g):
        n, (height, width), dev = len(x), x.shape[-2:], x.device
        sx, sy = _uniform(n, *t.stretch_x, g, dev), _uniform(n, *t.stretch_y, g, dev)
        shear, rad = torch.deg2rad(_uniform(n, *t.shear, g, dev)), torch.deg2rad(_uniform(n, *t.degrees, g, dev))
        tx, ty = t.translate
        shift = torch.stack([_uniform(n, -tx, tx, g, dev) * width, _uniform(n, -ty, ty, g, dev) * height], dim=1)
        cos, sin, tan = torch.cos(rad), torch.sin(rad), torch.tan(shear)
        # forward = [[cos, -sin], [sin, cos]] @ [[1, tan], [0, 1]] @ diag(sx, sy)
        forward = torch.stack([torch.stack([cos * sx, (cos * tan - sin) * sy], -1),
                               torch.stack([sin * sx, (sin * tan + cos) * sy], -1)], dim=1)
        return _sample(x, _warp_matrices(x, torch.linalg.inv(forward), shift), padding_mode=t.padding_mode)

    return fn


def _torchvision_affine(x: torch.Tensor, angle, translate, scale, shear_x, shear_y, mode: str, fill) -> torch.Tensor:
    """torchvision's `_get_inverse_affine_matrix` + `_affine_grid` (centre of the image), per sample."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    inverse = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], dim=1) / scale.view(-1, 1, 1)
    grid = _warp_matrices(x, inverse, translate)
    return _sample(x, grid, mode=mode, fill=_scalar_fill(fill))


def _scalar_fill(fill) -> float | None:
    if isinstance(fill, dict):  # v2 stores fill per input type
        fill = next(iter(fill.values()), None)
    if isinstance(fill, (list, tuple)):
        if len(set(fill)) > 1:
            raise UnsupportedTransformError("a per-channel fill")
        fill = fill[0]
    return None if fill is None else float(fill)


def _mode(t: nn.Module) -> str:
    mode = getattr(t.interpolation, "value", t.interpolation)
    if mode not in ("nearest", "bilinear"):
        raise UnsupportedTransformError(f"interpolation={mode!r} (use nearest or bilinear)")
    return mode


def _random_affine(t: v2.RandomAffine) -> BatchFn:
    mode, fill = _mode(t), t._fill
    _scalar_fill(fill)
    if t.center is not None:
        raise UnsupportedTransformError("center=... (only the image centre)")

    def fn(x, g):
        n, (height, width), dev = len(x), x.shape[-2:], x.device
        zeros = torch.zeros(n, device=dev)
        angle = _uniform(n, *t.degrees, g, dev)
        if t.translate is not None:
            max_dx, max_dy = float(t.translate[0] * width), float(t.translate[1] * height)
            translate = torch.stack([torch.round(_uniform(n, -max_dx, max_dx, g, dev)),
                                     torch.round(_uniform(n, -max_dy, max_dy, g, dev))], dim=1)
        else:
            translate = torch.zeros(n, 2, device=dev)
        scale = _uniform(n, *t.scale, g, dev) if t.scale is not None else torch.ones(n, device=dev)
        shear_x = shear_y = zeros
        if t.shear is not None:
            shear_x = _uniform(n, t.shear[0], t.shear[1], g, dev)
            if len(t.shear) == 4:
                shear_y = _uniform(n, t.shear[2], t.shear[3], g, dev)
        return _torchvision_affine(x, angle, translate, scale, shear_x, shear_y, mode, fill)

    return fn


def _random_rotation(t: v2.RandomRotation) -> BatchFn:
    mode, fill = _mode(t), t._fill
    _scalar_fill(fill)
    if t.expand or t.center is not None:
        raise UnsupportedTransformError("expand=True or center=... (the size would change per image)")

    def fn(x, g):
        n, dev = len(x), x.device
        zeros = torch.zeros(n, device=dev)
        angle = -_uniform(n, *t.degrees, g, dev)  # rotate_image passes -angle to the affine matrix
        return _torchvision_affine(x, angle, torch.zeros(n, 2, device=dev), torch.ones(n, device=dev), zeros, zeros,
                                   mode, fill)

    return fn


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def _color_jitter(t: v2.ColorJitter) -> BatchFn:
    """The four adjustments in a random order per image (torchvision's randperm), as arithmetic."""

    def brightness(x, f):
        return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)

    def contrast(x, f):
        return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)

    def saturation(x, f):
        return x if x.shape[1] == 1 else _blend(x, _gray(x), f)

    def hue(x, f):
        if x.shape[1] == 1:
            return x
        h, s, v = _rgb_to_hsv(x).unbind(dim=1)
        return _hsv_to_rgb(torch.stack([(h + f.view(-1, 1, 1)).remainder(1.0), s, v], dim=1))

    ops = list(zip((brightness, contrast, saturation, hue), (t.brightness, t.contrast, t.saturation, t.hue), strict=True))

    def fn(x, g):
        n, dev = len(x), x.device
        order = torch.rand(n, 4, generator=g, device=dev).argsort(dim=1)  # a uniform permutation per image
        factors = [None if rng is None else _uniform(n, rng[0], rng[1], g, dev) for _, rng in ops]
        for position in range(4):
            for op_id, (op, _) in enumerate(ops):
                if factors[op_id] is None:
                    continue
                chosen = order[:, position] == op_id
                x = _on_subset(x, chosen, lambda rows, _g, op=op, f=factors[op_id][chosen]: op(rows, f), g)
        return x

    return fn


def _random_erasing(t: v2.RandomErasing) -> BatchFn:
    log_ratio = (math.log(t.ratio[0]), math.log(t.ratio[1]))

    def fn(x, g):
        n, c, height, width = x.shape
        dev = x.device
        apply = torch.rand(n, generator=g, device=dev) < t.p
        area = height * width * _uniform(n * 10, *t.scale, g, dev).view(n, 10)
        aspect = torch.exp(_uniform(n * 10, *log_ratio, g, dev).view(n, 10))
        h, w = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
        first, found = _first_valid((h < height) & (w < width))
        h, w = h.gather(1, first[:, None]), w.gather(1, first[:, None])  # (N, 1)
        top = _randint(height - h[:, 0] + 1, g)[:, None]
        left = _randint(width - w[:, 0] + 1, g)[:, None]
        rows, cols = torch.arange(height, device=dev)[None], torch.arange(width, device=dev)[None]
        in_rows, in_cols = (rows >= top) & (rows < top + h), (cols >= left) & (cols < left + w)
        box = (in_rows[:, :, None] & in_cols[:, None, :] & (apply & found)[:, None, None])[:, None]  # (N, 1, H, W)
        if t.value is None:  # value="random": standard normal noise
            value = torch.randn(x.shape, generator=g, device=dev)
        else:
            value = torch.tensor(t.value, dtype=x.dtype, device=dev).view(1, -1, 1, 1).expand_as(x)
        return torch.where(box, value, x)

    return fn


def _compose(t: v2.Compose) -> BatchFn:
    fns = [batched_transform(child) for child in t.transforms]

    def fn(x, g):
        for f in fns:
            x = f(x, g)
        return x

    return fn


def _random_apply(t: v2.RandomApply) -> BatchFn:
    inner = _compose(v2.Compose(list(t.transforms)))

    def fn(x, g):
        return _on_subset(x, torch.rand(len(x), generator=g, device=x.device) < t.p, inner, g)

    return fn


def _pick_k(fns: list[BatchFn], k: int) -> BatchFn:
    """Per image, k of the transforms without replacement in random order (RandomCombination/RandomOrder)."""

    def fn(x, g):
        order = torch.rand(len(x), len(fns), generator=g, device=x.device).argsort(dim=1)
        for slot in range(k):
            for index, f in enumerate(fns):
                x = _on_subset(x, order[:, slot] == index, f, g)
        return x

    return fn


def _random_choice(t: v2.RandomChoice) -> BatchFn:
    fns = [batched_transform(child) for child in t.transforms]
    p = torch.tensor(t.p, dtype=torch.float32)

    def fn(x, g):
        choice = torch.multinomial(p.to(x.device), len(x), replacement=True, generator=g)
        for index, f in enumerate(fns):
            x = _on_subset(x, choice == index, f, g)
        return x

    return fn


_COUNTERPARTS: list[tuple[type, Callable[[nn.Module], BatchFn]]] = [
    (v2.Identity, lambda t: lambda x, g: x),
    (v2.RandomHorizontalFlip, _flip(-1)),
    (v2.RandomVerticalFlip, _flip(-2)),
    (RandomScaleCrop, _resized_crop),
    (v2.RandomResizedCrop, _resized_crop),
    (PadAndCrop, _pad_and_crop),
    (LensDistortion, _lens),
    (RandomStretchShear, _stretch_shear),
    (v2.RandomAffine, _random_affine),
    (v2.RandomRotation, _random_rotation),
    (v2.ColorJitter, _color_jitter),
    (v2.RandomErasing, _random_erasing),
    (RandomCombination, lambda t: _pick_k([batched_transform(c) for c in t.transforms], t.k)),
    (v2.RandomOrder, lambda t: _pick_k([batched_transform(c) for c in t.transforms], len(t.transforms))),
    (v2.RandomChoice, _random_choice),
    (v2.RandomApply, _random_apply),
    (v2.Compose, _compose),
]
SUPPORTED = sorted({cls.__name__ for cls, _ in _COUNTERPARTS})


def _describe(t: nn.Module) -> str:
    return repr(t).replace("\n", " ")


def batched_transform(t: nn.Module) -> BatchFn:
    """The batched counterpart `fn(images (N, C, H, W) float, generator) -> images` of one transform.

    Raises a ValueError naming the transform when it has none (the fix: `data.device_augment: false`).

    Example:
        >>> fn = batched_transform(v2.RandomHorizontalFlip(p=1.0))
        >>> x = torch.rand(4, 1, 8, 8)
        >>> bool(torch.equal(fn(x, torch.Generator()), x.flip(-1)))
        True
    """
    for cls, make in _COUNTERPARTS:
        if type(t) is cls:  # exact: a subclass may draw its parameters differently (it can define `batched`)
            try:
                return make(t)
            except UnsupportedTransformError as error:
                raise UnsupportedTransformError(
                    f"data.device_augment=true: {_describe(t)} has no batched counterpart with {error}. Change that "
                    "option, or set data.device_augment=false (per-sample transforms in DataLoader workers)."
                ) from None
    if callable(getattr(t, "batched", None)):
        return t.batched
    raise UnsupportedTransformError(
        f"data.device_augment=true: {_describe(t)} has no batched counterpart (supported: {', '.join(SUPPORTED)}, or any "
        "transform with a `batched(images, generator)` method). Remove it, or set data.device_augment=false to "
        "run the per-sample transforms in DataLoader workers."
    )


class BatchedAugment:
    """The training-time augmentation of a whole batch: `data.augment` in order, on the batch's device.

    Args:
        transforms: the `data.augment` list; every entry needs a batched counterpart (checked here).

    Example:
        >>> aug = BatchedAugment([v2.RandomHorizontalFlip(), v2.ColorJitter(brightness=0.4)])
        >>> aug(torch.rand(8, 3, 32, 32), torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(self, transforms: list[nn.Module]) -> None:
        self.fns = [batched_transform(t) for t in transforms]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for fn in self.fns:
            images = fn(images, generator)
        return images


def preprocess_batch(images: torch.Tensor, mode: str, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """`mixins.preprocessing.Preprocess` applied to a batch (N, C, H, W): the same formulas, batched.

    Example:
        >>> preprocess_batch(torch.full((2, 1, 2, 2), 0.75), "standardize",
        ...                  {"shift": torch.tensor([0.5]), "scale": torch.tensor([0.25])}).unique().tolist()
        [1.0]
    """
    if mode == "none" or not state:
        return images
    if "matrix" in state:  # zca / pca
        flat = images.reshape(len(images), -1) - state["pixel_mean"].to(images.device)
        return (flat @ state["matrix"].to(images.device)).reshape(images.shape)
    shift, scale = state["shift"].to(images.device).view(1, -1, 1, 1), state["scale"].to(images.device).view(1, -1, 1, 1)
    return (images - shift) / scale
