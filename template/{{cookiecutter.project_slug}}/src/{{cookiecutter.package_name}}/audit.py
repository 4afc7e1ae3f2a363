"""A7 — Label-preservation audit: does each transform keep what the trained model sees?

    python -m <package>.audit --ckpt runs/<project>/<run>/checkpoints/best.ckpt

For every configured augmentation (the run's `data.augment`) and a few probes (flips, large
rotations, a small translation) it applies the transform to each validation image and reports
how often the model's prediction changes against the untransformed image (flip rate) and the
accuracy drop. A transform whose flip rate is above `--threshold` is flagged: a model trained on
the data has learnt that it changes what the image shows; the dataset's own declarations (the
A7 start-up check) are shown beside it. The table is printed and logged to W&B (offline when not
logged in) as `audit/label_preservation`.

Why here: no library audits augmentations against a trained model.
"""

from __future__ import annotations

import argparse
import inspect
import sys
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

__all__ = ["AuditRow", "audit_transforms", "default_probes", "main"]


@dataclass
class AuditRow:
    transform: str
    flip_rate: float  # share of images whose predicted class changes
    accuracy: float  # accuracy on the transformed images
    accuracy_drop: float  # clean accuracy minus that
    flagged: bool  # flip_rate > threshold
    declared: bool  # the dataset declares it identity-changing (A7 start-up check)


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


@torch.no_grad()
def audit_transforms(model: nn.Module, datamodule: ImageDataModule, transforms: dict[str, nn.Module],
                     threshold: float = 0.2, seed: int = 0, batch_size: int = 256) -> tuple[float, list[AuditRow]]:
    """Audit `transforms` on the validation split; returns the clean accuracy and one row each.

    Images go through the same pipeline as at evaluation: base transform, the audited transform,
    then the pre-processing fitted on the training split.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"audit threshold={threshold}: use a flip rate in (0, 1), e.g. 0.2.")
    datamodule.setup("validate")
    base = v2.Compose(datamodule._base_transform() or [v2.Identity()])
    preprocess = datamodule.preprocess_transform()
    rules = datasets.DATASETS[datamodule.dataset].identity_changing or {}
    samples = [datamodule.splits.val[i] for i in range(len(datamodule.splits.val))]
    raw = [base(s[0], s[1]) if len(s) == 3 else (base(s[0]), None) for s in samples]
    labels = torch.tensor([int(s[-1]) for s in samples])
    model.eval()

    def predict(images: list[torch.Tensor]) -> torch.Tensor:
        batch = torch.stack([preprocess(x).as_subclass(torch.Tensor) for x in images])
        return torch.cat([model(chunk).argmax(dim=-1) for chunk in batch.split(batch_size)])

    clean = predict([image for image, _ in raw])
    clean_accuracy = float((clean == labels).float().mean())
    rows = []
    for name, transform in transforms.items():
        torch.manual_seed(seed)
        moved = [transform(image, mask)[0] if mask is not None else transform(image) for image, mask in raw]
        predicted = predict(moved)
        flip_rate = float((predicted != clean).float().mean())
        accuracy = float((predicted == labels).float().mean())
        rows.append(AuditRow(name, flip_rate, accuracy, clean_accuracy - accuracy, flip_rate > threshold,
                             bool(identity_changing([transform], rules))))
    return clean_accuracy, rows


def format_table(clean_accuracy: float, rows: list[AuditRow], threshold: float) -> str:
    width = max([len(r.transform) for r in rows] + [9])
    lines = [f"Label-preservation audit (clean validation accuracy {clean_accuracy:.3f}; flagged: flip rate > {threshold:g})",
             f"{'transform'.ljust(width)}  flip rate  accuracy  drop    verdict            declared"]
    for r in rows:
        verdict = "IDENTITY-CHANGING" if r.flagged else "ok"
        lines.append(f"{r.transform.ljust(width)}  {r.flip_rate:9.3f}  {r.accuracy:8.3f}  {r.accuracy_drop:+.3f}  "
                     f"{verdict:<17}  {'yes' if r.declared else ''}")
    return "\n".join(lines)


def load_datamodule(config: dict, checkpoint: dict) -> ImageDataModule:
    """The run's DataModule from its resolved config's `data` section, with the checkpoint's statistics."""
    data = dict(config.get("data") or {})
    data["allow_identity_changing"] = True  # the audit's job is to look at such transforms, not refuse them
    datamodule = datamodule_from_section(data)
    if ImageDataModule.__qualname__ in checkpoint:
        datamodule.load_state_dict(checkpoint[ImageDataModule.__qualname__])
    return datamodule


def log_to_wandb(rows: list[AuditRow], clean_accuracy: float, config: dict, save_dir: str) -> None:
    from .loggers import AutoWandbLogger

    logger_cfg = (config.get("trainer") or {}).get("logger") or {}
    project = (logger_cfg.get("init_args") or {}).get("project", "audit") if isinstance(logger_cfg, dict) else "audit"
    logger = AutoWandbLogger(project=project, save_dir=save_dir, job_type="audit")
    columns = ["transform", "flip_rate", "accuracy", "accuracy_drop", "flagged", "declared"]
    logger.log_table("audit/label_preservation", columns=columns,
                     data=[[r.transform, r.flip_rate, r.accuracy, r.accuracy_drop, r.flagged, r.declared] for r in rows])
    logger.log_metrics({"audit/clean_accuracy": clean_accuracy})
    logger.experiment.finish()


def main(argv: list[str] | None = None) -> list[AuditRow]:
    parser = argparse.ArgumentParser(prog="python -m <package>.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint of a run (e.g. runs/<project>/<run>/checkpoints/best.ckpt)")
    parser.add_argument("--config", help="the run's resolved config (default: config.yaml beside checkpoints/)")
    parser.add_argument("--threshold", type=float, default=0.2, help="flip rate above which a transform is flagged")
    parser.add_argument("--no-probes", action="store_true", help="audit only the configured transforms")
    parser.add_argument("--logger", choices=("wandb", "none"), default="wandb", help="where the table goes besides stdout")
    args = parser.parse_args(argv)
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
    clean_accuracy, rows = audit_transforms(model, datamodule, transforms, args.threshold)
    print(format_table(clean_accuracy, rows, args.threshold), flush=True)
    if args.logger == "wandb":
        log_to_wandb(rows, clean_accuracy, config, str(ckpt.parent.parent.parent.parent))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
