"""A6 — medical-style (image, mask) transform: the mask follows the moved object, the hole is
refilled from the surrounding texture (no zeros, not flat), and the seams are soft."""

from __future__ import annotations

import importlib

import pytest
import torch
from augment_helpers import recipe_transforms
from PIL import Image
from torchvision import tv_tensors


def blend(pkg):
    return importlib.import_module(f"{pkg.__name__}.transforms.move_and_blend")


def shapes_sample(pkg, index: int = 0):
    datasets = importlib.import_module(f"{pkg.__name__}.datasets")
    return datasets.SyntheticMaskedShapes(8, size=48, seed=3)[index]


def test_A6_mask_follows_the_object_and_the_hole_is_refilled_with_texture(pkg):
    mod = blend(pkg)
    image, mask, _ = shapes_sample(pkg)
    obj = mask.bool()
    background = image[0][~mod._dilate(obj, 3)]
    shift = (7, -6)
    moved, new_mask = mod.move_and_blend(image, mask, shift, feather=1.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(new_mask.bool(), mod._shift(obj, *shift))  # the mask moved exactly with the object
    assert int(new_mask.sum()) == int(mask.sum())
    hole = obj & ~new_mask.bool()
    refill = moved[0][hole]
    assert refill.min() > 0.05  # no zeros: the synthetic background never goes below 0.05
    assert abs(float(refill.mean()) - float(background.mean())) < 0.08  # background, not object (~0.85)
    assert float(refill.std()) > 0.4 * float(background.std())  # texture, not a flat colour
    # The object itself arrived: its pixels match the source object's.
    inner = mod._shift(obj & ~mod._dilate(~obj, 2), *shift)
    assert float(moved[0][inner].mean()) == pytest.approx(float(image[0][obj].mean()), abs=0.05)


def test_A6_seams_are_soft_with_feathering_and_hard_without(pkg):
    mod = blend(pkg)
    image, mask, _ = shapes_sample(pkg)
    shift = (6, 5)
    soft, new_mask = mod.move_and_blend(image, mask, shift, feather=1.5, generator=torch.Generator().manual_seed(0))
    hard, _ = mod.move_and_blend(image, mask, shift, feather=0.0, generator=torch.Generator().manual_seed(0))
    obj = new_mask.bool()
    rim = obj & mod._dilate(~obj, 1)  # the pasted object's outermost pixels
    level = float(image[0][mask.bool()].mean())

    def intermediate(result):  # between the background's top values and the object's level
        return int(((result[0][rim] > 0.6) & (result[0][rim] < level - 0.1)).sum())

    assert intermediate(soft) > 0.5 * int(rim.sum())
    assert intermediate(hard) < intermediate(soft) / 3


def test_A6_transform_through_the_datamodule_moves_train_images_only(pkg):
    (transform,) = recipe_transforms("augment/move-and-blend", pkg)
    transform.p = 1.0
    dm = pkg.ImageDataModule("shapes", augment=[transform])
    dm.setup("fit")
    torch.manual_seed(0)
    image, mask, label = dm.splits.train[0]
    moved, moved_label = dm.train_dataloader().dataset[0]
    assert moved_label == label and not torch.allclose(moved, dm.eval_transform(image))
    plain, _ = dm.val_dataloader().dataset[0]
    assert torch.allclose(plain, dm.eval_transform(dm.splits.val[0][0]))
    # Without a mask (digits), the object is segmented by Otsu's threshold and moved all the same.
    digit = torch.zeros(1, 32, 32)
    digit[:, 8:20, 10:14] = 1.0
    segmented = blend(pkg).segment_bright(digit)
    assert torch.equal(segmented.bool(), digit[0] > 0.5)
    assert not torch.allclose(transform(digit), digit)


def test_A6_image_folder_with_masks_layout(pkg, tmp_path):
    for cls in ("lesion", "clear"):
        (tmp_path / cls).mkdir()
        (tmp_path / "masks" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = (torch.rand(20, 20, 3) * 120 + 60).to(torch.uint8)
            pixels[5:10, 5:10] = 250
            Image.fromarray(pixels.numpy()).save(tmp_path / cls / f"{i}.png")
            mask = torch.zeros(20, 20, dtype=torch.uint8)
            mask[5:10, 5:10] = 255
            Image.fromarray(mask.numpy()).save(tmp_path / "masks" / cls / f"{i}.png")
    dm = pkg.ImageDataModule("imagefolder", root=str(tmp_path), masks=True, image_size=16, batch_size=4,
                             val_fraction=0.25, test_fraction=0.25, augment=[blend(pkg).MoveAndBlend()])
    dm.setup("fit")
    assert dm.classes == ["clear", "lesion"]
    image, mask, _ = dm.splits.train[0]
    assert isinstance(mask, tv_tensors.Mask) and mask.shape == (20, 20) and int(mask.sum()) == 25
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and labels.shape == (4,)
    (tmp_path / "masks" / "clear" / "0.png").unlink()
    with pytest.raises(FileNotFoundError, match="have no mask"):
        pkg.ImageDataModule("imagefolder", root=str(tmp_path), masks=True).setup("fit")
