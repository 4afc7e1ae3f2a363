"""T3 — LR range test before training (Lightning's LearningRateFinder) with its curve saved and logged.

Lecture: "A typical value of the LR is 0.1" — a starting point; the range test (Smith 2017) checks it for
this model and data: the LR grows exponentially over a few batches and the loss is recorded.

Card:
    What: runs Lightning's `LearningRateFinder` at fit start, applies the suggested LR (steepest
        loss descent) to the optimizer, writes the curve as `lr_finder.csv` and `lr_finder.png` in the
        run folder, and logs the suggestion (plus the image where the logger takes images: W&B,
        TensorBoard).
    When it helps: a new dataset or backbone, before trusting LR 0.1.
    Cost: `num_training_steps` extra batches (100 by default) before training; the model, optimizer
        and data position are restored afterwards.

Why here: Lightning's finder draws its plot with matplotlib, which this project does not depend on,
and does not save or log it. The curve is drawn with PIL instead (a small log-x line plot), and the
numbers go to a CSV so they can be re-plotted anywhere. The suggestion is applied to the optimizer's
param groups directly, because the module has no `lr` attribute for the finder to set.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw
from pytorch_lightning.callbacks import LearningRateFinder

from .lr_batch_scaling import scale_lrs

__all__ = ["LearningRateFinderPlot", "draw_lr_curve"]


def run_folder(trainer) -> Path:
    """The run's folder, by the rule ModelCheckpoint uses (save_dir/name/version of the first logger)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir, str(logger.name), version)


def draw_lr_curve(lrs: list[float], losses: list[float], suggestion: float | None, size=(640, 400)) -> Image.Image:
    """A log-x line plot of loss against LR, the suggestion marked by a red vertical line."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    width, height = size
    left, right, top, bottom = 60, width - 20, 20, height - 40
    points = [(lr, loss) for lr, loss in zip(lrs, losses, strict=True) if lr > 0 and math.isfinite(loss)]
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, bottom + 22), "learning rate (log scale)", fill="black")
    draw.text((4, top), "loss", fill="black")
    if len(points) < 2:
        draw.text((left + 10, top + 10), "too few points for a curve", fill="black")
        return image
    xs = [math.log10(lr) for lr, _ in points]
    ys = [loss for _, loss in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    draw.line([to_pixel(x, y) for x, y in zip(xs, ys, strict=True)], fill="blue", width=2)
    for decade in range(math.ceil(x0), math.floor(x1) + 1):
        px, _ = to_pixel(decade, y0)
        draw.line([px, bottom, px, bottom + 5], fill="black")
        draw.text((px - 12, bottom + 7), f"1e{decade}", fill="black")
    draw.text((4, bottom - 10), f"{y0:.3g}", fill="black")
    draw.text((4, top + 12), f"{y1:.3g}", fill="black")
    if suggestion is not None and suggestion > 0:
        px, _ = to_pixel(math.log10(suggestion), y0)
        draw.line([px, top, px, bottom], fill="red", width=1)
        draw.text((min(px + 4, right - 110), top + 4), f"suggested {suggestion:.3g}", fill="red")
    return image


class LearningRateFinderPlot(LearningRateFinder):
    """Lightning's LR finder, its curve saved as PNG + CSV in the run folder and logged; the suggestion applied.

    Args:
        min_lr, max_lr, num_training_steps, mode, early_stop_threshold: as `LearningRateFinder`.
        apply_suggestion: set every optimizer LR to the suggested one (scaled alike for multiple groups).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[LearningRateFinderPlot(num_training_steps=50)])
    """

    def __init__(self, min_lr: float = 1e-6, max_lr: float = 1.0, num_training_steps: int = 100, mode: str = "exponential",
                 early_stop_threshold: float | None = 4.0, apply_suggestion: bool = True) -> None:
        if not 0 < min_lr < max_lr:
            raise ValueError(f"LearningRateFinderPlot(min_lr={min_lr}, max_lr={max_lr}): need 0 < min_lr < max_lr.")
        if num_training_steps < 2:
            raise ValueError(f"LearningRateFinderPlot(num_training_steps={num_training_steps}): use at least 2, e.g. 100.")
        if mode not in ("exponential", "linear"):
            raise ValueError(f"LearningRateFinderPlot(mode={mode!r}): choose 'exponential' or 'linear'.")
        super().__init__(min_lr=min_lr, max_lr=max_lr, num_training_steps=num_training_steps, mode=mode,
                         early_stop_threshold=early_stop_threshold, update_attr=False)
        self.apply_suggestion = apply_suggestion
        self.suggestion: float | None = None
        self.plot_path: Path | None = None

    def lr_find(self, trainer, pl_module) -> None:
        super().lr_find(trainer, pl_module)
        if self.optimal_lr is None:  # fast_dev_run: Lightning skips the search
            return
        lrs, losses = self.optimal_lr.results["lr"], self.optimal_lr.results["loss"]
        self.suggestion = self.optimal_lr.suggestion()
        if self.suggestion is not None and self.apply_suggestion and trainer.optimizers:
            scale_lrs(trainer, self.suggestion / trainer.optimizers[0].param_groups[0]["lr"])
        if not trainer.is_global_zero:
            return
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lr_finder.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["lr", "loss"])
            writer.writerows(zip(lrs, losses, strict=True))
        self.plot_path = folder / "lr_finder.png"
        image = draw_lr_curve(lrs, losses, self.suggestion)
        image.save(self.plot_path)
        applied = "applied" if self.apply_suggestion and self.suggestion is not None else "not applied"
        print(f"LR finder: suggested LR {self.suggestion} ({applied}); curve in {self.plot_path}", flush=True)
        for logger in trainer.loggers:
            if self.suggestion is not None:
                logger.log_metrics({"lr_finder/suggested_lr": self.suggestion}, step=trainer.global_step)
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image("lr_finder/curve", [str(self.plot_path)])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                from torchvision.transforms.v2.functional import pil_to_tensor

                logger.experiment.add_image("lr_finder/curve", pil_to_tensor(image), global_step=trainer.global_step)
