"""A4 — translation, rotation, stretching, shearing, lens distortion and their random combination.

Lens: k = 0 is the identity, k != 0 bends a straight line, the centre stays put.
Stretch/shear: the aspect ratio and the angle change exactly as configured.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from augment_helpers import recipe_transforms
from torchvision import tv_tensors

SIZE = 33  # odd: the centre is a pixel


def geometry(pkg, name):
    return importlib.import_module(f"{pkg.__name__}.transforms.{name}")


def line_columns(image: torch.Tensor) -> torch.Tensor:
    """Per row, the intensity-weighted column of a (mostly vertical) bright line."""
    rows = image[0]
    cols = torch.arange(rows.shape[1], dtype=torch.float32)
    weight = rows.sum(dim=1).clamp_min(1e-8)
    return (rows * cols).sum(dim=1) / weight


def vertical_line(column: int) -> torch.Tensor:
    image = torch.zeros(1, SIZE, SIZE)
    image[:, :, column] = 1.0
    return image


def test_A4_lens_k0_is_identity_and_keeps_masks_binary(pkg):
    lens = geometry(pkg, "lens_distortion")
    image = torch.rand(3, SIZE, SIZE)
    assert torch.allclose(lens.lens_distort(image, 0.0), image, atol=1e-5)
    mask = tv_tensors.Mask((torch.rand(SIZE, SIZE) > 0.5).to(torch.uint8))
    _, warped = lens.LensDistortion(k=(0.3, 0.3))(tv_tensors.Image(image), mask)
    assert set(warped.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("k", [0.3, -0.3])
def test_A4_lens_bends_a_straight_line_and_keeps_the_centre(pkg, k):
    lens = geometry(pkg, "lens_distortion")
    straight = line_columns(vertical_line(23)[:, 6:-6])  # rows near the edges may leave the image
    bent = line_columns(lens.lens_distort(vertical_line(23), k)[:, 6:-6])
    assert straight.max() - straight.min() < 1e-4
    middle, ends = float(bent[len(bent) // 2]), float((bent[0] + bent[-1]) / 2)
    # Barrel (k > 0): the line bulges away from the centre in its middle; pincushion: towards it.
    assert (middle - ends) * math.copysign(1, k) > 0.5
    dot = torch.zeros(1, SIZE, SIZE)
    dot[:, SIZE // 2, SIZE // 2] = 1.0
    moved = lens.lens_distort(dot, k)
    assert int(moved.flatten().argmax()) == (SIZE // 2) * SIZE + SIZE // 2
    assert moved[0, SIZE // 2, SIZE // 2] > 0.99


def test_A4_stretch_changes_the_aspect_ratio_as_configured(pkg):
    geo = geometry(pkg, "stretch_shear")
    square = torch.zeros(1, SIZE, SIZE)
    square[:, 12:21, 12:21] = 1.0  # 9 x 9
    stretched = geo.stretch_shear(square, stretch_x=1.5, stretch_y=0.75)
    width = float(stretched[0].sum(dim=1).max())  # widest row's mass ~ its width in pixels
    height = float(stretched[0].sum(dim=0).max())
    assert width == pytest.approx(13.5, abs=0.6) and height == pytest.approx(6.75, abs=0.6)
    assert width / height == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("shear", [15.0, -25.0])
def test_A4_shear_turns_a_vertical_line_by_the_configured_angle(pkg, shear):
    geo = geometry(pkg, "stretch_shear")
    sheared = geo.stretch_shear(vertical_line(SIZE // 2), shear=shear)[:, 6:-6]
    columns = line_columns(sheared)
    rows = torch.arange(len(columns), dtype=torch.float32)
    slope = float(((rows - rows.mean()) * (columns - columns.mean())).sum() / ((rows - rows.mean()) ** 2).sum())
    assert math.degrees(math.atan(slope)) == pytest.approx(shear, abs=1.0)


def test_A4_random_stretch_shear_draws_within_its_ranges(pkg):
    (transform,) = recipe_transforms("augment/stretch-shear", pkg)
    torch.manual_seed(0)
    draws = [transform.make_params([]) for _ in range(200)]
    for key in ("stretch_x", "stretch_y", "shear", "degrees"):
        low, high = getattr(transform, key)
        values = [d[key] for d in draws]
        assert low <= min(values) and max(values) <= high and max(values) - min(values) > 0.5 * (high - low)
    with pytest.raises(ValueError, match=r"RandomStretchShear\(shear=\(-90, 90\)\)"):
        geometry(pkg, "stretch_shear").RandomStretchShear(shear=(-90, 90))


def test_A4_random_combination_applies_exactly_k_of_n(pkg):
    combination = geometry(pkg, "random_combination")

    class AddPower(torch.nn.Module):
        def __init__(self, power: int) -> None:
            super().__init__()
            self.value = 10.0**power

        def forward(self, x):
            return x + self.value

    torch.manual_seed(0)
    transform = combination.RandomCombination([AddPower(i) for i in range(4)], k=2)
    picked = set()
    for _ in range(60):
        total = int(transform(torch.zeros(1)).item())
        digits = [int(d) for d in f"{total:04d}"]
        assert sorted(digits) == [0, 0, 1, 1]  # two distinct transforms, once each
        picked.add(total)
    assert len(picked) == 6  # all C(4, 2) pairs occur
    with pytest.raises(ValueError, match=r"RandomCombination\(k=5\)"):
        combination.RandomCombination([AddPower(0)], k=5)


def test_A4_recipes_change_images_and_keep_their_size(pkg):
    torch.manual_seed(0)
    image = torch.zeros(1, 32, 32)
    image[:, 8:24, 14:18] = 1.0
    for name in ("augment/random-combination", "augment/randaugment", "augment/lens-distortion", "augment/stretch-shear"):
        (transform,) = recipe_transforms(name, pkg)
        outputs = [transform(image) for _ in range(6)]
        assert all(o.shape == image.shape for o in outputs)
        assert sum(not torch.allclose(o, image) for o in outputs) >= 3, name
