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

Every supported transform has a batched form drawing its parameters from the SAME distribution
as its per-sample version, so both paths train on the same data distribution
(tests/test_A_device_augment.py compares them). Our transforms carry theirs as a
`batched(images, generator) -> images` method on (N, C, H, W) floats, next to their per-sample
form and sharing its core (crops.py, lens_distortion.py, stretch_shear.py; grids and the affine
map in _warp.py); a transform of your own joins the same way. This file holds the counterparts
of torchvision's transforms (their `make_params` drawn per image) and of the containers.

Why here: torchvision v2 transforms draw one set of parameters per call (a batch gets the same
flip, the same crop); Kornia would add a dependency. These are short, on `grid_sample`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ._draw import box_candidates, first_valid, randint_below, uniform
from ._warp import affine_matrix, inverse_affine_grid, sample
from .crops import random_resized_crop
from .random_combination import RandomCombination

__all__ = ["BatchedAugment", "batched_transform"]

BatchFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class UnsupportedTransformError(ValueError):
    """A transform in `data.augment` has no batched counterpart."""


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


# ----------------------------------------------------------------------------- torchvision's transforms
def _flip(dim: int) -> Callable[[nn.Module], BatchFn]:
    def make(t: nn.Module) -> BatchFn:
        def fn(x, g):
            return _where(torch.rand(len(x), generator=g, device=x.device) < t.p, x.flip(dim), x)

        return fn

    return make


def _resized_crop(t: v2.RandomResizedCrop) -> BatchFn:
    size = tuple(t.size)
    return lambda x, g: random_resized_crop(x, t.scale, t.ratio, size, g)


def _scalar_fill(fill) -> float | None:
    if isinstance(fill, dict):  # v2 takes fill per input type
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


def _torchvision_affine(x: torch.Tensor, angle, translate, scale, shear_x, shear_y, mode: str, fill) -> torch.Tensor:
    """torchvision's affine about the image centre, per sample: its map R(angle) . shear . scale is
    `affine_matrix` with the shears' sign flipped (torchvision shears by -tan)."""
    matrix = affine_matrix(angle, -shear_x, scale, scale, -shear_y)
    return sample(x, inverse_affine_grid(matrix, translate, *x.shape[-2:]), mode=mode, fill=fill)


def _random_affine(t: v2.RandomAffine) -> BatchFn:
    mode, fill = _mode(t), _scalar_fill(t.fill)
    if t.center is not None:
        raise UnsupportedTransformError("center=... (only the image centre)")

    def fn(x, g):
        n, (height, width), dev = len(x), x.shape[-2:], x.device
        zeros = torch.zeros(n, device=dev)
        angle = uniform(n, *t.degrees, g, dev)
        if t.translate is not None:
            max_dx, max_dy = float(t.translate[0] * width), float(t.translate[1] * height)
            translate = torch.stack([torch.round(uniform(n, -max_dx, max_dx, g, dev)),
                                     torch.round(uniform(n, -max_dy, max_dy, g, dev))], dim=1)
        else:
            translate = torch.zeros(n, 2, device=dev)
        scale = uniform(n, *t.scale, g, dev) if t.scale is not None else torch.ones(n, device=dev)
        shear_x = shear_y = zeros
        if t.shear is not None:
            shear_x = uniform(n, t.shear[0], t.shear[1], g, dev)
            if len(t.shear) == 4:
                shear_y = uniform(n, t.shear[2], t.shear[3], g, dev)
        return _torchvision_affine(x, angle, translate, scale, shear_x, shear_y, mode, fill)

    return fn


def _random_rotation(t: v2.RandomRotation) -> BatchFn:
    mode, fill = _mode(t), _scalar_fill(t.fill)
    if t.expand or t.center is not None:
        raise UnsupportedTransformError("expand=True or center=... (the size would change per image)")

    def fn(x, g):
        n, dev = len(x), x.device
        zeros = torch.zeros(n, device=dev)
        angle = -uniform(n, *t.degrees, g, dev)  # rotate_image passes -angle to the affine matrix
        return _torchvision_affine(x, angle, torch.zeros(n, 2, device=dev), torch.ones(n, device=dev), zeros, zeros,
                                   mode, fill)

    return fn


def _gray(x: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else TF.rgb_to_grayscale(x)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_hue with one shift per image (N, 3, H, W): RGB -> HSV, h += shift (mod 1), -> RGB."""
    red, green, _ = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    spread = maxc - minc
    flat = spread == 0  # grey: s = 0 and h = 0 (no division by zero below)
    saturation = spread / torch.where(flat, torch.ones_like(maxc), maxc)
    rc, gc, bc = ((maxc[:, None] - x) / torch.where(flat, torch.ones_like(spread), spread)[:, None]).unbind(dim=1)
    hue = torch.where(maxc == red, bc - gc, torch.where(maxc == green, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = (hue / 6.0 + 1.0 + shift.view(-1, 1, 1)).remainder(1.0)
    # HSV -> RGB: channel n (5, 3, 1 for R, G, B) is v (1 - s clamp(min(k, 4 - k), 0, 1)), k = (n + 6 h) mod 6.
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1) + 6 * hue[:, None]).remainder(6.0)
    return maxc[:, None] * (1 - saturation[:, None] * torch.minimum(k, 4 - k).clamp(0, 1))


def _color_jitter(t: v2.ColorJitter) -> BatchFn:
    """The four adjustments in a random order per image (torchvision's randperm), as arithmetic."""

    def brightness(x, f):
        return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)

    def contrast(x, f):
        return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)

    def saturation(x, f):
        return x if x.shape[1] == 1 else _blend(x, _gray(x), f)

    def hue(x, f):
        return x if x.shape[1] == 1 else _shift_hue(x, f)

    ops = list(zip((brightness, contrast, saturation, hue), (t.brightness, t.contrast, t.saturation, t.hue), strict=True))

    def fn(x, g):
        n, dev = len(x), x.device
        order = torch.rand(n, 4, generator=g, device=dev).argsort(dim=1)  # a uniform permutation per image
        factors = [None if rng is None else uniform(n, rng[0], rng[1], g, dev) for _, rng in ops]
        for position in range(4):
            for op_id, (op, _) in enumerate(ops):
                if factors[op_id] is None:
                    continue
                chosen = order[:, position] == op_id
                x = _on_subset(x, chosen, lambda rows, _g, op=op, f=factors[op_id][chosen]: op(rows, f), g)
        return x

    return fn


def _random_erasing(t: v2.RandomErasing) -> BatchFn:
    def fn(x, g):
        n, c, height, width = x.shape
        dev = x.device
        apply = torch.rand(n, generator=g, device=dev) < t.p
        h, w = box_candidates(n, height * width, t.scale, t.ratio, g, dev)
        first, found = first_valid((h < height) & (w < width))
        h, w = h.gather(1, first[:, None]), w.gather(1, first[:, None])  # (N, 1)
        top = randint_below(height - h[:, 0] + 1, g)[:, None]
        left = randint_below(width - w[:, 0] + 1, g)[:, None]
        rows, cols = torch.arange(height, device=dev)[None], torch.arange(width, device=dev)[None]
        in_rows, in_cols = (rows >= top) & (rows < top + h), (cols >= left) & (cols < left + w)
        box = (in_rows[:, :, None] & in_cols[:, None, :] & (apply & found)[:, None, None])[:, None]  # (N, 1, H, W)
        if t.value is None:  # value="random": standard normal noise
            value = torch.randn(x.shape, generator=g, device=dev)
        else:
            value = torch.tensor(t.value, dtype=x.dtype, device=dev).view(1, -1, 1, 1).expand_as(x)
        return torch.where(box, value, x)

    return fn


# ----------------------------------------------------------------------------- containers
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
    (v2.RandomResizedCrop, _resized_crop),
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
# Methods that decide what a transform draws: a subclass overriding one needs a `batched` of its own.
_DRAWING = ("make_params", "transform", "forward")


def _own_batched(t: nn.Module) -> BatchFn | None:
    """`t.batched`, unless a subclass below the class defining it changed how `t` draws or applies."""
    if callable(vars(t).get("batched")):  # set on the instance itself
        return t.batched
    mro = type(t).__mro__
    owner = next((cls for cls in mro if callable(vars(cls).get("batched"))), None)
    if owner is None or any(name in vars(cls) for cls in mro[: mro.index(owner)] for name in _DRAWING):
        return None
    return t.batched


def _supported() -> list[str]:
    """torchvision's transforms with a counterpart here, and ours with a `batched` method."""
    package = sys.modules[__package__]
    ours = {name for name in package.__all__
            if isinstance(cls := getattr(package, name), type) and callable(vars(cls).get("batched"))}
    return sorted({cls.__name__ for cls, _ in _COUNTERPARTS} | ours)


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
    if (fn := _own_batched(t)) is not None:
        return fn
    raise UnsupportedTransformError(
        f"data.device_augment=true: {_describe(t)} has no batched counterpart (supported: {', '.join(_supported())}, or any "
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
