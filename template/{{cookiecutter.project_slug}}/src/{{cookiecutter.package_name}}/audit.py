"""A7 — Label-preservation audit: does a transform change what an image shows, or has the model just never seen it?

    python -m <package>.audit --ckpt runs/<project>/<run>/checkpoints/best.ckpt

For every configured augmentation (the run's `data.augment`) and a few probes (flips, large
rotations, a small translation) it applies the transform to each validation image and reports how
often the model's prediction changes against the untransformed image (flip rate) and the accuracy
drop. A high flip rate alone measures *invariance*, not label preservation: a model trained on
Fashion-MNIST without flips changes its mind on a quarter of the mirrored images although a
mirrored shirt is a shirt — it has never seen a right-pointing shoe. So a transform whose flip rate
is above `--threshold` gets a second, decisive test, *learned away when trained with* (the idea
behind learnt augmentation policies and invariance tests, e.g. Cubuk et al. 2019, AutoAugment;
Benton et al. 2020, "Learning invariances in neural networks"):

    a copy of the model is fine-tuned for `--fine-tune-steps` SGD steps on a subset of the training
    split, the transform applied to half of each batch, and both accuracies are measured again.
    A label-preserving transform is learnable: the accuracy on transformed images comes back within
    `--tolerance` of the clean accuracy, and the clean accuracy holds. An identity-changing one is
    not: where x and T(x) belong to different classes (a 6 turned 180 degrees is a 9) the fine-tuned
    model cannot be right on both, so the transformed accuracy stays below the clean one, or the
    clean accuracy drops.

What the fine-tune can and cannot see: it catches transforms that make classes collide in the
data (a 2x2-pixel shrink erases the digit; an over-tight crop cuts off what tells two classes
apart). It does not catch a *reading* change a network can learn around: fine-tuned with 180-degree
turns, a small net on the 8x8 digits tells an upside-down 6 from a 9 by handwriting details and
recovers both (measured: transformed accuracy 0.98 after 200 steps). Such semantic rules are the
dataset's declarations (the A7 start-up check), and the evidence does not overrule them.

Verdicts: `ok` (flip rate under the threshold; no fine-tune), `IDENTITY-CHANGING (declared)` (over
the threshold and declared by the dataset; no fine-tune), `unseen (learnable)` (over the threshold,
learned away), `IDENTITY-CHANGING` (over the threshold, not learnable).

Cost: one fine-tune per flagged, undeclared transform — `--fine-tune-steps` x `--fine-tune-batch`
images from `--fine-tune-images` training images, a few seconds per transform for a small net on
the CPU; the seconds are reported per row. The table is printed and logged to W&B (offline when not logged in) as
`audit/label_preservation`.

Why here: no library audits augmentations against a trained model.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn
from torchvision.transforms import v2

from . import datasets
from .data_config import datamodule_from_section
from .datamodule import ImageDataModule
from .module import ImageClassifier
from .transforms.identity_check import identity_changing

__all__ = ["AuditRow", "FineTune", "audit_transforms", "default_probes", "main"]

IDENTITY_CHANGING, LEARNABLE, OK = "IDENTITY-CHANGING", "unseen (learnable)", "ok"
DECLARED = f"{IDENTITY_CHANGING} (declared)"


@dataclass
class AuditRow:
    transform: str
    flip_rate: float  # share of images whose predicted class changes
    accuracy: float  # accuracy on the transformed images
    accuracy_drop: float  # clean accuracy minus that
    flagged: bool  # flip_rate > threshold: the model is not invariant to it (the fine-tune decides why)
    declared: bool  # the dataset declares it identity-changing (A7 start-up check)
    verdict: str = OK  # ok | unseen (learnable) | IDENTITY-CHANGING | IDENTITY-CHANGING (declared)
    tuned_clean_accuracy: float | None = None  # after the fine-tune with the transform (flagged rows only)
    tuned_accuracy: float | None = None  # on transformed images, after that fine-tune
    seconds: float = 0.0  # the fine-tune's wall time

    @property
    def identity_changing(self) -> bool:
        return self.verdict.startswith(IDENTITY_CHANGING)


@dataclass
class FineTune:
    """The learnability test: `steps` SGD steps of `batch_size` images (half transformed) drawn from at
    most `images` training images; a transform is learnable when, afterwards, the transformed accuracy
    is within `tolerance` of the clean one and the clean accuracy has lost at most `tolerance`."""

    steps: int = 200
    batch_size: int = 64
    images: int = 1000
    lr: float = 0.01
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.images < self.batch_size:
            raise ValueError(f"fine-tune steps={self.steps}, batch_size={self.batch_size}, images={self.images}: "
                             "use steps >= 1, batch_size >= 2 and images >= batch_size (e.g. 300, 64, 2000).")
        if not 0.0 < self.tolerance < 1.0 or self.lr <= 0:
            raise ValueError(f"fine-tune tolerance={self.tolerance}, lr={self.lr}: use a tolerance in (0, 1) "
                             "(e.g. 0.05) and a positive learning rate (e.g. 0.01).")


def default_probes(image_size: int) -> dict[str, nn.Module]:
    """Transforms every audit tries besides the configured ones."""
    shift = 2 / image_size
    return {
        "probe: horizontal flip": v2.RandomHorizontalFlip(p=1.0),
        "probe: vertical flip": v2.RandomVerticalFlip(p=1.0),
        "probe: rotate 180": v2.RandomRotation((180, 180)),
        "probe: rotate 90": v2.RandomRotation((90, 90)),
        "probe: translate <= 2 px": v2.RandomAffine(degrees=0, translate=(shift, shift)),
    }


def _apply(transform: nn.Module, image: torch.Tensor, mask) -> torch.Tensor:
    return transform(image, mask)[0] if mask is not None else transform(image)


def _base_samples(dataset, base: nn.Module, limit: int | None = None, seed: int = 0):
    """(image, mask or None) pairs after the evaluation's base transform, and the labels; a seeded subset of `limit`."""
    indices = range(len(dataset)) if limit is None or limit >= len(dataset) else \
        torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit].tolist()
    samples = [dataset[i] for i in indices]
    raw = [base(s[0], s[1]) if len(s) == 3 else (base(s[0]), None) for s in samples]
    return raw, torch.tensor([int(s[-1]) for s in samples])


def audit_transforms(model: nn.Module, datamodule: ImageDataModule, transforms: dict[str, nn.Module],
                     threshold: float = 0.2, seed: int = 0, batch_size: int = 256,
                     fine_tune: FineTune | None = None) -> tuple[float, list[AuditRow]]:
    """Audit `transforms` on the validation split; returns the clean accuracy and one row each.

    Images go through the same pipeline as at evaluation: base transform, the audited transform,
    then the pre-processing fitted on the training split. Rows over `threshold` that the dataset
    does not declare are fine-tuned with (`fine_tune`, default `FineTune()`; the model itself is
    never changed) to tell `unseen (learnable)` from `IDENTITY-CHANGING`.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"audit threshold={threshold}: use a flip rate in (0, 1), e.g. 0.2.")
    fine_tune = fine_tune or FineTune()
    datamodule.setup("validate")
    base = v2.Compose(datamodule._base_transform() or [v2.Identity()])
    preprocess = datamodule.preprocess_transform()
    rules = datasets.DATASETS[datamodule.dataset].identity_changing or {}
    val_raw, labels = _base_samples(datamodule.splits.val, base)
    model.eval()

    def batch_of(raw: list, transform: nn.Module | None = None) -> torch.Tensor:
        torch.manual_seed(seed)
        images = [image if transform is None else _apply(transform, image, mask) for image, mask in raw]
        return torch.stack([preprocess(x).as_subclass(torch.Tensor) for x in images])

    @torch.no_grad()
    def accuracy_of(net: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        predicted = torch.cat([net(chunk).argmax(dim=-1) for chunk in images.split(batch_size)])
        return predicted, float((predicted == labels).float().mean())

    clean_images = batch_of(val_raw)
    clean, clean_accuracy = accuracy_of(model, clean_images)
    train_raw = train_labels = train_clean = None
    rows = []
    for name, transform in transforms.items():
        moved = batch_of(val_raw, transform)
        predicted, accuracy = accuracy_of(model, moved)
        flip_rate = float((predicted != clean).float().mean())
        row = AuditRow(name, flip_rate, accuracy, clean_accuracy - accuracy, flip_rate > threshold,
                       bool(identity_changing([transform], rules)))
        if row.flagged and row.declared:
            row.verdict = DECLARED
        elif row.flagged:
            if train_raw is None:
                train_raw, train_labels = _base_samples(datamodule.splits.train, base, fine_tune.images, seed)
                train_clean = batch_of(train_raw)
            started = time.perf_counter()
            tuned = _fine_tuned(model, train_clean, batch_of(train_raw, transform), train_labels, fine_tune, seed)
            row.tuned_clean_accuracy = accuracy_of(tuned, clean_images)[1]
            row.tuned_accuracy = accuracy_of(tuned, moved)[1]
            row.seconds = time.perf_counter() - started
            learnable = (row.tuned_clean_accuracy - row.tuned_accuracy <= fine_tune.tolerance
                         and clean_accuracy - row.tuned_clean_accuracy <= fine_tune.tolerance)
            row.verdict = LEARNABLE if learnable else IDENTITY_CHANGING
        rows.append(row)
    return clean_accuracy, rows


def _fine_tuned(model: nn.Module, clean: torch.Tensor, moved: torch.Tensor, labels: torch.Tensor,
                options: FineTune, seed: int) -> nn.Module:
    """A copy of `model` after `options.steps` SGD steps on batches of which half are transformed images.

    Each training image is transformed once (one draw of a random transform's parameters): the test
    asks whether the transformed images can be classified, not for augmentation's variety."""
    tuned = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(tuned.parameters(), lr=options.lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    half = options.batch_size // 2
    for _ in range(options.steps):
        index = torch.randperm(len(labels), generator=generator)[:options.batch_size]
        images = torch.cat([moved[index[:half]], clean[index[half:]]])
        optimizer.zero_grad()
        nn.functional.cross_entropy(tuned(images), labels[index]).backward()
        optimizer.step()
    return tuned.eval()


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(clean_accuracy: float, rows: list[AuditRow], threshold: float) -> str:
    width = max([len(r.transform) for r in rows] + [9])
    lines = [f"Label-preservation audit (clean validation accuracy {clean_accuracy:.3f}; "
             f"fine-tuned with when flip rate > {threshold:g})",
             f"{'transform'.ljust(width)}  flip rate  accuracy  drop    tuned clean  tuned T  seconds  "
             f"verdict                        declared"]
    for r in rows:
        lines.append(f"{r.transform.ljust(width)}  {r.flip_rate:9.3f}  {r.accuracy:8.3f}  {r.accuracy_drop:+.3f}  "
                     f"{_cell(r.tuned_clean_accuracy):>11}  {_cell(r.tuned_accuracy):>7}  {r.seconds:7.1f}  "
                     f"{r.verdict:<29}  {'yes' if r.declared else ''}")
    return "\n".join(lines)


def load_datamodule(config: dict, checkpoint: dict) -> ImageDataModule:
    """The run's DataModule from its resolved config's `data` section, with the checkpoint's statistics."""
    data = dict(config.get("data") or {})
    data["allow_identity_changing"] = True  # the audit's job is to look at such transforms, not refuse them
    datamodule = datamodule_from_section(data)
    if ImageDataModule.__qualname__ in checkpoint:
        datamodule.load_state_dict(checkpoint[ImageDataModule.__qualname__])
    return datamodule


TABLE_COLUMNS = ["transform", "flip_rate", "accuracy", "accuracy_drop", "flagged", "declared",
                 "tuned_clean_accuracy", "tuned_accuracy", "seconds", "verdict"]


def log_to_wandb(rows: list[AuditRow], clean_accuracy: float, config: dict, save_dir: str) -> None:
    from .loggers import AutoWandbLogger

    logger_cfg = (config.get("trainer") or {}).get("logger") or {}
    project = (logger_cfg.get("init_args") or {}).get("project", "audit") if isinstance(logger_cfg, dict) else "audit"
    logger = AutoWandbLogger(project=project, save_dir=save_dir, job_type="audit")
    logger.log_table("audit/label_preservation", columns=TABLE_COLUMNS,
                     data=[[getattr(r, column) for column in TABLE_COLUMNS] for r in rows])
    logger.log_metrics({"audit/clean_accuracy": clean_accuracy})
    logger.experiment.finish()


def main(argv: list[str] | None = None) -> list[AuditRow]:
    parser = argparse.ArgumentParser(prog="python -m <package>.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint of a run (e.g. runs/<project>/<run>/checkpoints/best.ckpt)")
    parser.add_argument("--config", help="the run's resolved config (default: config.yaml beside checkpoints/)")
    parser.add_argument("--threshold", type=float, default=0.2, help="flip rate above which a transform is fine-tuned with")
    parser.add_argument("--fine-tune-steps", type=int, default=FineTune.steps, help="SGD steps of the learnability test")
    parser.add_argument("--fine-tune-batch", type=int, default=FineTune.batch_size, help="images per step, half transformed")
    parser.add_argument("--fine-tune-images", type=int, default=FineTune.images, help="training images it draws from")
    parser.add_argument("--tolerance", type=float, default=FineTune.tolerance,
                        help="accuracy gap a learnable transform may leave after the fine-tune")
    parser.add_argument("--no-probes", action="store_true", help="audit only the configured transforms")
    parser.add_argument("--logger", choices=("wandb", "none"), default="wandb", help="where the table goes besides stdout")
    args = parser.parse_args(argv)
    try:
        fine_tune = FineTune(args.fine_tune_steps, args.fine_tune_batch, args.fine_tune_images, tolerance=args.tolerance)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        raise SystemExit(f"--ckpt {ckpt}: no such checkpoint. Train first, or give runs/<project>/<run>/checkpoints/best.ckpt.")
    config_path = Path(args.config) if args.config else ckpt.parent.parent / "config.yaml"
    if not config_path.is_file():
        raise SystemExit(f"--config {config_path}: not found. Give the run's config.yaml (its data section says what to audit).")
    config = yaml.safe_load(config_path.read_text()) or {}
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    accepted = inspect.signature(ImageClassifier).parameters
    model = ImageClassifier(**{k: v for k, v in checkpoint["hyper_parameters"].items() if k in accepted})
    model.load_state_dict(checkpoint["state_dict"])
    datamodule = load_datamodule(config, checkpoint)
    transforms = {f"augment[{i}]: {type(t).__name__}": t for i, t in enumerate(datamodule.augment)}
    if not args.no_probes:
        transforms.update(default_probes(datamodule.image_size))
    if not transforms:
        raise SystemExit("Nothing to audit: the run has no data.augment and --no-probes was given.")
    clean_accuracy, rows = audit_transforms(model, datamodule, transforms, args.threshold, fine_tune=fine_tune)
    print(format_table(clean_accuracy, rows, args.threshold), flush=True)
    if args.logger == "wandb":
        log_to_wandb(rows, clean_accuracy, config, str(ckpt.parent.parent.parent.parent))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
