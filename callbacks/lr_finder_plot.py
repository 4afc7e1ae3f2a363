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

Why here: Lightning's finder can draw its curve (`plot()`, with pyplot) but does not save or log it.
Here the curve is drawn with matplotlib (a `Figure` on the Agg canvas: no display, no pyplot state) as
a log-x line plot with the suggestion marked, and the numbers go to a CSV so they can be re-plotted
anywhere. The suggestion is applied to the optimizer's param groups directly, because the module has
no `lr` attribute for the finder to set. Under `fast_dev_run` Lightning skips the search and nothing
is written.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from PIL import Image
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import LearningRateFinder
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from ..utils.plots import figure, to_image
from ._diagnostics import run_folder
from .lr_batch_scaling import scale_lrs

__all__ = ["LearningRateFinderPlot", "draw_lr_curve"]


def lr_curve_figure(lrs: list[float], losses: list[float], suggestion: float | None, size=(640, 400)):
    """The LR range test as a matplotlib `Figure`: loss against LR on a log x axis, the suggested LR
    marked by a red dashed vertical line and a red dot on the curve."""
    fig, axes = figure(size)
    ax = axes[0, 0]
    points = [(lr, loss) for lr, loss in zip(lrs, losses, strict=True) if lr > 0 and math.isfinite(loss)]
    ax.set_title("LR range test: training loss vs learning rate")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_xscale("log")
    ax.grid(True, which="major", alpha=0.3)
    if len(points) < 2:
        ax.text(0.5, 0.5, "too few points for a curve", transform=ax.transAxes, ha="center", va="center")
        return fig
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, color="blue", linewidth=2, label="loss")
    if suggestion is not None and suggestion > 0:
        ax.axvline(suggestion, color="red", linestyle="--", linewidth=1.5, label=f"suggested LR {suggestion:.3g}")
        nearest = min(range(len(xs)), key=lambda i: abs(math.log(xs[i] / suggestion)))
        ax.plot([xs[nearest]], [ys[nearest]], "o", color="red", markersize=7)
    ax.legend(loc="best", fontsize="small")
    return fig


def draw_lr_curve(lrs: list[float], losses: list[float], suggestion: float | None, size=(640, 400)) -> Image.Image:
    """`lr_curve_figure` rendered as a PIL image of `size` pixels."""
    return to_image(lr_curve_figure(lrs, losses, suggestion, size))


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

    @override
    def lr_find(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().lr_find(trainer, pl_module)
        if self.optimal_lr is None:  # fast_dev_run: Lightning skips the search
            return
        lrs, losses = self.optimal_lr.results["lr"], self.optimal_lr.results["loss"]
        self.suggestion = self.optimal_lr.suggestion()
        if self.suggestion is not None and self.apply_suggestion and trainer.optimizers:
            scale_lrs(trainer, self.suggestion / trainer.optimizers[0].param_groups[0]["lr"])
        if not trainer.is_global_zero:
            return
        image = draw_lr_curve(lrs, losses, self.suggestion)
        folder = run_folder(trainer)
        if folder is not None:  # None under fast_dev_run: nothing is written
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "lr_finder.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["lr", "loss"])
                writer.writerows(zip(lrs, losses, strict=True))
            self.plot_path = folder / "lr_finder.png"
            image.save(self.plot_path)
        applied = "applied" if self.apply_suggestion and self.suggestion is not None else "not applied"
        where = f"curve in {self.plot_path}" if self.plot_path else "curve not saved"
        rank_zero_info(f"LR finder: suggested LR {self.suggestion} ({applied}); {where}")
        for logger in trainer.loggers:
            if self.suggestion is not None:
                logger.log_metrics({"lr_finder/suggested_lr": self.suggestion}, step=trainer.global_step)
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image("lr_finder/curve", [image])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                from torchvision.transforms.v2.functional import pil_to_tensor

                logger.experiment.add_image("lr_finder/curve", pil_to_tensor(image), global_step=trainer.global_step)
