"""Predict new images: every image of a folder (or a list) labelled by a checkpoint, as one CSV.

    lightning predict --config configs/default.yaml --ckpt_path best --data.predict_root photos/

`data.predict_root` is a folder, searched recursively for image files, or a text file listing image
paths, one per line (relative ones from the file's folder; blank lines and `#` comments skipped).
The files are listed and header-checked when the DataModule is built, so a missing folder or one
without images fails before anything runs; unreadable files are named in one warning and skipped
(`data.corrupt_images=error` stops instead). Each image is decoded as the dataset's images are
(grayscale or RGB), resized to the checkpoint's image size and normalized with the checkpoint's
pre-processing statistics (restored from it with the class names, `ImageDataModule.state_dict`).

The CLI adds a `PredictionWriter` to `predict` whenever `data.predict_root` is set (also with
`--ensemble`): `<run>/predictions.csv` for a checkpoint `<run>/checkpoints/*.ckpt`, else
`./predictions.csv`, with columns `path,label,probability,label_2,probability_2,...` (the
`data.predict_top_k` most likely class names, at most the class count) and one row per image in
file order; the last line printed is `predictions: <path>`.

Why here: Lightning's `BasePredictionWriter` says when rows may be written, not what or where, and
torchvision's `ImageFolder` needs class sub-folders, which unlabelled images do not have.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import Dataset
from typing_extensions import override

from .datasets import CORRUPT_IMAGES, IMAGE_SUFFIXES, DataNotFoundError

__all__ = ["ImageFiles", "PredictionWriter", "checkpoint_image_size", "find_images", "output_folder"]

FILENAME = "predictions.csv"


def _listed_paths(list_file: Path) -> list[Path]:
    """The paths a text file lists, one per line; relative ones from the file's folder."""
    paths = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line).expanduser()
            paths.append(path if path.is_absolute() else list_file.parent / path)
    return paths


def _can_open(path: Path) -> bool:
    """PIL parses the header and verifies it (no pixel decoding): about 0.1 ms per file."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception:  # a missing file, or PIL's OSError, SyntaxError, ValueError... for a broken one
        return False
    return True


def find_images(root: Path, corrupt_images: str = "skip") -> list[Path]:
    """The readable images `root` names (module docstring), in a fixed order; an error when there are none."""
    if corrupt_images not in CORRUPT_IMAGES:
        raise ValueError(f"data.corrupt_images={corrupt_images!r}: use one of {', '.join(CORRUPT_IMAGES)}.")
    option = f"data.predict_root={str(root)!r}"
    if root.is_dir():
        candidates = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        where = f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root.resolve()}"
    elif root.is_file():
        candidates = _listed_paths(root)
        where = f"{root.resolve()} lists no image paths"
    else:
        raise DataNotFoundError(f"{option}: no such folder or file. Point it at a folder of images (searched "
                                "recursively) or at a text file listing image paths, one per line.")
    if not candidates:
        raise DataNotFoundError(f"{option}: {where}. Point it at a folder of images or a list of image paths.")
    bad = [path for path in candidates if not _can_open(path)]
    listing = ", ".join(str(p) for p in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    if len(bad) == len(candidates) or (bad and corrupt_images == "error"):
        fix = "Replace or remove them" + ("" if len(bad) == len(candidates) else " (data.corrupt_images=skip leaves them out)")
        raise DataNotFoundError(f"{option}: {len(bad)} of {len(candidates)} images cannot be read: {listing}. {fix}.")
    if bad:
        rank_zero_warn(f"{option}: skipping {len(bad)} of {len(candidates)} images that cannot be read: {listing}.")
    unreadable = set(bad)
    return [path for path in candidates if path not in unreadable]


class ImageFiles(Dataset):
    """Unlabelled image files as `(PIL image, index)`: grayscale for 1-channel data, else RGB.
    The index (the file's row in `predictions.csv`) travels with the image, so rows written by
    several processes are put back in order and counted once."""

    def __init__(self, paths: list[Path], channels: int) -> None:
        self.paths, self.mode = list(paths), "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert(self.mode), index
        except Exception as error:  # a file damaged after its header: the header check at start passed it
            raise OSError(f"{path}: cannot decode this image ({error}). Remove it from data.predict_root and predict again.") from error


def output_folder(ckpt_path: str | Path | None) -> Path:
    """The run folder of `<run>/checkpoints/[...]/x.ckpt`, else the current folder."""
    if ckpt_path:
        for parent in Path(ckpt_path).resolve().parents:
            if parent.name == "checkpoints":
                return parent.parent
    return Path.cwd()


class PredictionWriter(BasePredictionWriter):
    """Writes `predictions.csv`: one row per file of `data.predict_root`, the `top_k` most likely class
    names with their probabilities (module docstring).

    Rows are streamed per batch to a part file of each process (memory stays flat on any folder), and
    rank 0 merges the parts in file order, keeping each file once (a sampler that pads a rank's share
    repeats files; Lightning's own predict sampler does not, the merge does not rely on it). Several
    nodes need the run folder on a shared filesystem. The model's `predict_step` returns class
    probabilities, `(batch, classes)`: ImageClassifier's and EnsembleModule's both do.

    Args:
        top_k: classes per row, most likely first; capped at the class count.
    """

    def __init__(self, top_k: int = 3) -> None:
        super().__init__(write_interval="batch")
        if top_k < 1:
            raise ValueError(f"PredictionWriter(top_k={top_k}): use 1 or more (the most likely classes per image, e.g. 3).")
        self.top_k = top_k
        self.output: Path | None = None

    def _part(self, rank: int) -> Path:
        return self.output.with_name(f".{FILENAME}.rank{rank}.part")

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = trainer.datamodule
        self._files = getattr(datamodule, "predict_files", None)
        if self._files is None:
            raise ValueError("PredictionWriter labels the files of data.predict_root: set --data.predict_root to a folder "
                             "of images or a text file listing them.")
        self._classes = list(datamodule.classes)
        self._k = min(self.top_k, len(self._classes))
        self.output = output_folder(trainer.ckpt_path) / FILENAME
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self._part(trainer.global_rank), "w", newline="")  # closed in on_predict_end
        self._rows = csv.writer(self._stream)

    @override
    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: list[int] | None, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        probs = prediction.detach().float()
        if probs.ndim != 2 or probs.shape[-1] != len(self._classes) or not torch.allclose(
                probs.sum(-1), torch.ones((), device=probs.device), atol=1e-3):
            raise ValueError(f"PredictionWriter: predict_step returned {tuple(probs.shape)} values that are not "
                             f"probabilities over the {len(self._classes)} classes; return softmax(logits), one row per image.")
        values, classes = probs.topk(self._k, dim=-1)
        for index, row_probs, row_classes in zip(batch[1].tolist(), values.tolist(), classes.tolist(), strict=True):
            cells = [index, self._files[index]]
            for cls, prob in zip(row_classes, row_probs, strict=True):
                cells += [self._classes[cls], f"{prob:.6f}"]
            self._rows.writerow(cells)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stream.close()
        trainer.strategy.barrier()  # every part is complete
        if trainer.is_global_zero:
            rows: dict[int, list[str]] = {}
            for part in (self._part(rank) for rank in range(trainer.world_size)):
                with open(part, newline="") as stream:
                    for index, *cells in csv.reader(stream):
                        rows.setdefault(int(index), cells)
                part.unlink()
            header = ["path", "label", "probability"] + [f"{name}_{i}" for i in range(2, self._k + 1)
                                                          for name in ("label", "probability")]
            with open(self.output, "w", newline="") as stream:
                writer = csv.writer(stream)
                writer.writerow(header)
                writer.writerows(rows[index] for index in sorted(rows))
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            print(f"predictions: {self.output}", flush=True)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None and not stream.closed:
            stream.close()


def checkpoint_image_size(path: Path, weights_only: bool | None = True) -> int | None:
    """The input size a checkpoint of ImageClassifier was trained at (`hyper_parameters.image_size`), if it says.
    Memory-mapped: only the small pickled dictionary is read, not the weights."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only is not False, mmap=True)
    size = (checkpoint.get("hyper_parameters") or {}).get("image_size")
    return int(size) if isinstance(size, int) else None
