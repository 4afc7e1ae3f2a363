"""P1–P4 — Pre-processing: zero-centre, divide by std, min/max to [-1, 1], PCA/ZCA whitening.

Lecture: "Pre-processing" (CS231n's figures): subtract the mean (P1), normalize by the std (P2),
or make the min and max along each dimension -1 and 1 (P3); PCA/whitening (P4) "is not strictly
necessary for images", so it is off by default.

Card:
    What: statistics measured once on the TRAINING split (never validation or test), turned into
        one transform at the end of every split's pipeline (after augmentation). They are kept in
        the DataModule's state, hence in every checkpoint, and reloaded at validate/test/predict
        and resume, so a new process normalizes exactly as training did.
        `published`: the dataset's published training-set mean/std (measured when it has none);
        `center`: x - mean (P1); `standardize`: (x - mean) / std (P1 + P2);
        `minmax`: 2 (x - min) / (max - min) - 1, per channel (P3);
        `zca` / `pca`: whitening with the training covariance (P4); `none`: nothing.
    When it helps: centred, unit-scale inputs keep the first layers' activations and gradients
        in range (and make He/Xavier init assumptions hold). Whitening decorrelates pixels;
        ZCA keeps the image layout, PCA rotates into the eigenbasis (pixels lose their place,
        so convolutions lose their meaning: provided to follow the lecture, rarely a good idea).
    Cost: one pass over the training split at the first fit; whitening adds a D x D matrix
        product per image (D = C*H*W) and D^2 floats in the checkpoint.

Why here: torchvision's Normalize needs the numbers; nothing measures them on the right split
and carries them through checkpoints. The formulas live here once (`apply_preprocessing`): the
per-sample `Preprocess` of the DataLoader pipelines and the batched `preprocess_batch` of
`data.device_augment` both call it. The DataModule (datamodule.py) measures, keeps and restores
the statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["PREPROCESS", "Preprocess", "apply_preprocessing", "fit_preprocessing", "measure", "preprocess_batch"]

PREPROCESS = ("published", "center", "standardize", "minmax", "zca", "pca", "none")
NEEDS_COVARIANCE = ("zca", "pca")


@torch.no_grad()
def measure(batches, whiten: bool = False) -> dict[str, torch.Tensor]:
    """Per-channel mean/std/min/max (and the pixel covariance if `whiten`) of image batches (N, C, H, W).

    One pass, float64 sums, so a large split never has to fit in memory at once.
    """
    count, images_seen, total, squares, low, high, outer, flat_sum = 0, 0, None, None, None, None, None, None
    for images in batches:
        x = images.as_subclass(torch.Tensor).double()
        per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
        if total is None:
            total, squares = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
            low, high = per_channel.min(dim=1).values, per_channel.max(dim=1).values
        total += per_channel.sum(dim=1)
        squares += (per_channel**2).sum(dim=1)
        low, high = torch.minimum(low, per_channel.min(dim=1).values), torch.maximum(high, per_channel.max(dim=1).values)
        count += per_channel.shape[1]
        images_seen += x.shape[0]
        if whiten:
            flat = x.reshape(x.shape[0], -1)
            outer = flat.T @ flat if outer is None else outer + flat.T @ flat
            flat_sum = flat.sum(dim=0) if flat_sum is None else flat_sum + flat.sum(dim=0)
    if total is None:
        raise ValueError("The training split is empty: nothing to measure pre-processing statistics on.")
    mean = total / count
    std = (squares / count - mean**2).clamp_min(0).sqrt()
    stats = {"mean": mean.float(), "std": std.float(), "min": low.float(), "max": high.float()}
    if whiten:
        n = images_seen
        pixel_mean = flat_sum / n
        stats["pixel_mean"] = pixel_mean.float()
        stats["covariance"] = outer / n - torch.outer(pixel_mean, pixel_mean)  # float64: tiny eigenvalues matter
    return stats


def whitening_matrix(covariance: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    """W such that (x - mean) @ W has (about) identity covariance: ZCA = U S^-1/2 U^T, PCA = U S^-1/2."""
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
    scale = (eigenvalues.clamp_min(0) + eps).rsqrt()
    pca = eigenvectors * scale
    return (pca if kind == "pca" else pca @ eigenvectors.T).float()


def fit_preprocessing(mode: str, stats: dict[str, torch.Tensor], eps: float = 1e-2) -> dict[str, torch.Tensor]:
    """Turn measured statistics into the tensors `Preprocess` needs for `mode` (what is saved)."""
    if mode in ("published", "standardize"):
        return {"shift": stats["mean"], "scale": stats["std"].clamp_min(1e-8)}
    if mode == "center":
        return {"shift": stats["mean"], "scale": torch.ones_like(stats["mean"])}
    if mode == "minmax":  # x' = 2 (x - min) / (max - min) - 1  =  (x - (max + min) / 2) / ((max - min) / 2)
        return {"shift": (stats["max"] + stats["min"]) / 2, "scale": ((stats["max"] - stats["min"]) / 2).clamp_min(1e-8)}
    if mode in NEEDS_COVARIANCE:
        return {"pixel_mean": stats["pixel_mean"], "matrix": whitening_matrix(stats["covariance"], mode, eps)}
    return {}


def apply_preprocessing(images: torch.Tensor, mode: str, state: dict[str, torch.Tensor], image_dims: int = 3) -> torch.Tensor:
    """The fitted pre-processing of float `images` whose last `image_dims` dims are one image
    ((C, H, W): a batch (N, C, H, W) or one image): (x - shift) / scale per channel, or
    (x - pixel_mean) @ matrix on the flattened image (whitening)."""
    if mode == "none" or not state:
        return images
    device = images.device
    if "matrix" in state:  # zca / pca
        flat = images.reshape(*images.shape[: images.ndim - image_dims], -1) - state["pixel_mean"].to(device)
        return (flat @ state["matrix"].to(device)).reshape(images.shape)
    shape = (-1,) + (1,) * (image_dims - 1)
    return (images - state["shift"].to(device).view(shape)) / state["scale"].to(device).view(shape)


class Preprocess(v2.Transform):
    """Apply fitted pre-processing to images (masks and labels pass through untouched).

    Example:
        >>> p = Preprocess("standardize", {"shift": torch.tensor([0.5]), "scale": torch.tensor([0.25])})
        >>> p(torch.full((1, 2, 2), 0.75)).flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, mode: str, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.mode, self.state = mode, state

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if self.mode == "none" or isinstance(inpt, (tv_tensors.Mask, tv_tensors.BoundingBoxes, tv_tensors.KeyPoints)):
            return inpt
        x = inpt.as_subclass(torch.Tensor).float()
        out = apply_preprocessing(x, self.mode, self.state, image_dims=x.ndim)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def preprocess_batch(images: torch.Tensor, mode: str, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """`Preprocess` of a batch (N, C, H, W) on its device (`data.device_augment`).

    Example:
        >>> preprocess_batch(torch.full((2, 1, 2, 2), 0.75), "standardize",
        ...                  {"shift": torch.tensor([0.5]), "scale": torch.tensor([0.25])}).unique().tolist()
        [1.0]
    """
    return apply_preprocessing(images, mode, state)


def batches_of(dataset: Dataset, batch_size: int = 256, num_workers: int = 0):
    """Image batches of a dataset of (image, ...) samples, for `measure`."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        yield batch[0]
