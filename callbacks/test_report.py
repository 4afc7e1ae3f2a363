"""*extra* — Evaluation report at `lightning test`: per-class metrics, top-k, calibration, confusion matrix, worst mistakes.

Lecture: test accuracy is the lecture's one number; it hides which classes fail, how sure the model
is when it is wrong and what it gets wrong. Calibration after Guo et al. 2017, "On Calibration of
Modern Neural Networks" (expected calibration error, reliability diagrams).

Card:
    What: during `trainer.test` collects, per test batch, torchmetrics' per-class and macro
        precision/recall/F1, top-k accuracy (default top-5, when there are more than k classes),
        the expected calibration error (ECE, `bins` equal-width confidence bins) and the confusion
        matrix, plus the `mistakes` most confident misclassified images. At the end of the test it
        logs the numbers (`test/macro_f1`, `test/ece`, `test/top5_acc`, `test/recall/<class>`, ...),
        writes `per_class.csv`, `confusion_matrix.csv` + `.png`, `reliability.png` and
        `mistakes.png` into the run folder, and with a W&B logger sends W&B's native confusion-matrix
        chart and the three images to the run.
    When it helps: every test of a model you mean to compare or ship: a class the model never
        predicts, an over-confident model (ECE), mislabelled or ambiguous test images (the gallery).
    Cost: metric updates per test batch (no second forward pass with the project's `ImageClassifier`,
        whose `test_step` returns its logits), one confidence per test image kept until the end,
        three figures at the end.

Why here: torchmetrics computes the numbers (synced across DDP ranks) and W&B draws a confusion
matrix; nothing turns them into files next to the run with a reliability diagram and a gallery of
the model's most confident mistakes.

The logits: `outputs["logits"]` (and `outputs["targets"]`) of the module's `test_step` when it
returns them, otherwise the callback runs `pl_module(images)` on the `(images, targets)` batch
itself; outputs that are probabilities already (an ensemble's) are not put through a softmax again.
With `TestTimeAugmentation` the logits are those of the averaged views, so the report is the TTA one. The gallery shows images as they were before pre-processing (P1–P4): the DataModule's
`preprocess_state` (shift/scale, or a whitening matrix) is inverted; without one, each image is
min-max scaled. Under `fast_dev_run` (Lightning writes nothing) no file is written.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.utilities import dim_zero_cat
from typing_extensions import override

from ..utils.plots import figure, grid_shape, to_image
from ._diagnostics import run_folder, wandb_logger

__all__ = ["EvaluationReport", "reliability_bins", "undo_preprocessing"]

PER_CLASS = ("precision", "recall", "f1")


@torch.no_grad()
def reliability_bins(confidences: torch.Tensor, correct: torch.Tensor, bins: int) -> dict[str, torch.Tensor]:
    """Per equal-width confidence bin: `count`, mean `confidence` and `accuracy` (0 in empty bins), and the `edges`.

    Binned as torchmetrics' `MulticlassCalibrationError` bins (a confidence on an inner edge goes to the
    bin above), whose binning is private; a confidence of 1.0 joins the last bin. The ECE is
    `sum(count * |accuracy - confidence|) / count.sum()`.

    Example:
        >>> b = reliability_bins(torch.tensor([0.25, 0.75, 0.75, 1.0]), torch.tensor([0, 1, 0, 1]), bins=2)
        >>> [[round(v, 4) for v in b[key].tolist()] for key in ("count", "confidence", "accuracy")]
        [[1.0, 3.0], [0.25, 0.8333], [0.0, 0.6667]]
    """
    confidences, correct = confidences.float().flatten(), correct.float().flatten()
    edges = torch.linspace(0, 1, bins + 1, device=confidences.device)
    index = (torch.bucketize(confidences, edges[1:-1], right=True)).clamp(max=bins - 1)
    count = torch.zeros(bins, device=confidences.device).scatter_add_(0, index, torch.ones_like(confidences))
    confidence_sum = torch.zeros_like(count).scatter_add_(0, index, confidences)
    correct_sum = torch.zeros_like(count).scatter_add_(0, index, correct)
    seen = count.clamp_min(1)
    return {"count": count, "confidence": confidence_sum / seen, "accuracy": correct_sum / seen, "edges": edges}


def as_probabilities(outputs: torch.Tensor) -> torch.Tensor:
    """Softmax of logits; outputs that are probabilities already (rows in [0, 1] summing to 1, as an
    ensemble's averaged softmax) are kept, the rule torchmetrics applies to its `preds`."""
    if outputs.min() >= 0 and outputs.max() <= 1 and (outputs.sum(-1) - 1).abs().max() <= 1e-4:
        return outputs
    return outputs.softmax(dim=-1)


@torch.no_grad()
def undo_preprocessing(images: torch.Tensor, state: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """Images (N, C, H, W) as they were before the DataModule's pre-processing, clamped to [0, 1] for display.

    `state` is `ImageDataModule.preprocess_state`: `{shift, scale}` per channel (x = x' * scale + shift),
    `{pixel_mean, matrix}` for whitening (x = x' @ pinv(matrix) + pixel_mean), `{}` for none. With
    `state=None` (unknown pre-processing) each image is min-max scaled on its own.

    Example:
        >>> undo_preprocessing(torch.ones(1, 1, 2, 2), {"shift": torch.tensor([0.5]), "scale": torch.tensor([0.25])}).unique()
        tensor([0.7500])
    """
    x = images.detach().float().cpu()
    if state is None:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        return (x - low) / (x.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
    if "matrix" in state:
        flat = x.flatten(1) @ torch.linalg.pinv(state["matrix"].float().cpu()) + state["pixel_mean"].float().cpu()
        x = flat.reshape(x.shape)
    elif "shift" in state:
        x = x * state["scale"].float().cpu().view(-1, 1, 1) + state["shift"].float().cpu().view(-1, 1, 1)
    return x.clamp(0, 1)


def confusion_figure(matrix: torch.Tensor, names: list[str]) -> Image.Image:
    """The confusion matrix as a heat map: rows true classes, columns predictions, colour the share of
    the row (per-class recall on the diagonal), counts written in the cells when there is room."""
    n = len(names)
    counts = matrix.cpu().numpy()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = int(min(1800, max(460, 34 * n + 220)))
    fig, axes = figure((side + 90, side))
    ax = axes[0, 0]
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="share of the true class")
    if n <= 30:
        for row in range(n):
            for column in range(n):
                ax.text(column, row, f"{int(counts[row, column])}", ha="center", va="center", fontsize="small",
                        color="white" if shares[row, column] > 0.5 else "black")
    if n <= 50:
        ax.set_xticks(range(n), names, rotation=90 if max(map(len, names)) > 3 else 0, fontsize="small")
        ax.set_yticks(range(n), names, fontsize="small")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix ({int(counts.sum())} test images)")
    return to_image(fig)


def reliability_figure(bins: dict[str, torch.Tensor], ece: float) -> Image.Image:
    """Reliability diagram (accuracy per confidence bin against the diagonal of perfect calibration,
    the gap shaded) over a histogram of the confidences."""
    edges = bins["edges"].cpu().numpy()
    count, accuracy, confidence = (bins[k].cpu().numpy() for k in ("count", "accuracy", "confidence"))
    width, centres, filled = np.diff(edges), (edges[:-1] + edges[1:]) / 2, count > 0
    fig, axes = figure((560, 640), 2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    top.plot([0, 1], [0, 1], "--", color="0.5", label="perfect calibration")
    top.bar(centres[filled], accuracy[filled], width=width[filled], edgecolor="black", color="tab:blue", label="accuracy")
    top.bar(centres[filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled], width=width[filled],
            color="tab:red", alpha=0.3, edgecolor="tab:red", hatch="//", label="gap to mean confidence")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy in the bin",
            title=f"Reliability diagram: ECE {ece:.4f} ({len(count)} bins)")
    top.legend(loc="upper left", fontsize="small")
    top.grid(True, alpha=0.3)
    bottom.bar(centres, count, width=width, color="0.6", edgecolor="black")
    bottom.set(xlabel="confidence (top-class probability)", ylabel="test images")
    bottom.grid(True, alpha=0.3)
    return to_image(fig)


def _short(name: str, length: int = 18) -> str:
    return name if len(name) <= length else name[: length - 1] + "…"


def mistakes_figure(images: torch.Tensor, rows: list[tuple[str, str, float]]) -> Image.Image:
    """A grid of images (N, C, H, W) in [0, 1], each titled with its true class, the prediction and its probability."""
    rows_n, columns = grid_shape(max(1, len(rows)))
    title = "Most confident mistakes: true -> predicted, probability"
    width, height = max(8 * len(title) + 40, 150 * columns), 65 + 185 * rows_n
    fig, axes = figure((width, height), rows_n, columns, layout=None)  # a fixed grid: no layout engine to pay for
    fig.subplots_adjust(left=0.02, right=0.98, bottom=10 / height, top=1 - 85 / height, wspace=0.15, hspace=0.45)
    fig.suptitle(title, y=1 - 8 / height, va="top")
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index >= len(rows):
            continue
        picture = images[index].permute(1, 2, 0).numpy()
        if picture.shape[-1] == 1:
            ax.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(picture[..., :3], interpolation="nearest")
        true, predicted, probability = (_short(v) if isinstance(v, str) else v for v in rows[index])
        ax.set_title(f"{true}\n-> {predicted}\np = {probability:.3f}", fontsize="small")
    if not rows:
        axes[0, 0].text(0.5, 0.5, "no misclassified test image", ha="center", va="center", transform=axes[0, 0].transAxes)
    return to_image(fig)


class EvaluationReport(Callback):
    """At `trainer.test`: per-class and macro precision/recall/F1, top-k accuracy, ECE with a reliability
    diagram, the confusion matrix and a gallery of the most confident mistakes (logged, written, W&B).

    Args:
        mistakes: how many of the most confident misclassified test images the gallery shows (0: no gallery).
        bins: equal-width confidence bins of the ECE and the reliability diagram (15, as Guo et al. 2017).
        top_k: the k of the top-k accuracy `test/top{k}_acc`, logged when there are more than k classes
            (with k or fewer every label is in the top k).

    After a test: `self.results` holds the logged numbers, `self.confusion` the matrix (rows true,
    columns predicted), `self.class_names` the names, `self.shown_mistakes` the gallery's
    (true, predicted, probability) rows, `self.folder` where the files went (None when none were written).

    Example (the default config has it; at `lightning test --config configs/default.yaml --ckpt_path best`):
        - class_path: EvaluationReport
          init_args: {mistakes: 16, bins: 15}
    """

    def __init__(self, mistakes: int = 16, bins: int = 15, top_k: int = 5) -> None:
        if isinstance(mistakes, bool) or not isinstance(mistakes, int) or mistakes < 0:
            raise ValueError(f"EvaluationReport(mistakes={mistakes!r}): use a count of images, 0 or more (e.g. 16).")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"EvaluationReport(bins={bins!r}): use 1 or more confidence bins (e.g. 15).")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 2:
            raise ValueError(f"EvaluationReport(top_k={top_k!r}): use 2 or more (top-1 is the accuracy itself), e.g. 5.")
        self.mistakes, self.bins, self.top_k = mistakes, bins, top_k
        self.metrics: MetricCollection | None = None
        self.results: dict[str, float] = {}
        self.confusion: torch.Tensor | None = None
        self.class_names: list[str] = []
        self.shown_mistakes: list[tuple[str, str, float]] = []
        self.folder: Path | None = None
        self._worst: dict[str, torch.Tensor] | None = None

    def _build_metrics(self, num_classes: int, device: torch.device) -> MetricCollection:
        metrics = {f"{name}_{average}": cls(num_classes, average=None if average == "per_class" else "macro")
                   for name, cls in zip(PER_CLASS, (MulticlassPrecision, MulticlassRecall, MulticlassF1Score), strict=True)
                   for average in ("per_class", "macro")}
        metrics["ece"] = MulticlassCalibrationError(num_classes, n_bins=self.bins, norm="l1")
        metrics["confusion"] = MulticlassConfusionMatrix(num_classes)
        if num_classes > self.top_k:
            metrics[f"top{self.top_k}_acc"] = MulticlassAccuracy(num_classes, top_k=self.top_k, average="micro")
        # compute_groups: precision, recall and F1 share one set of per-class counts.
        return MetricCollection(metrics, compute_groups=True).to(device)

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.metrics, self._worst, self.folder = None, None, None

    @override
    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        images, targets = batch[0], batch[1]
        if isinstance(outputs, dict) and "logits" in outputs:
            logits, targets = outputs["logits"], outputs.get("targets", targets)
        else:  # a module whose test_step returns nothing: one more forward pass
            with torch.no_grad():
                logits = pl_module(images)
        probabilities = as_probabilities(logits.detach().float())
        targets = targets.detach()
        if self.metrics is None:
            self.metrics = self._build_metrics(probabilities.shape[-1], probabilities.device)
        self.metrics.update(probabilities, targets)
        if self.mistakes:
            self._keep_worst(images.detach(), probabilities, targets)

    def _keep_worst(self, images: torch.Tensor, probabilities: torch.Tensor, targets: torch.Tensor) -> None:
        """Keep the `mistakes` most confident misclassifications seen so far (their images too)."""
        confidence, predicted = probabilities.max(dim=-1)
        wrong = predicted != targets
        batch = {"images": images[wrong].float(), "confidence": confidence[wrong], "target": targets[wrong],
                 "predicted": predicted[wrong]}
        if self._worst is not None:
            batch = {key: torch.cat([self._worst[key], value]) for key, value in batch.items()}
        keep = batch["confidence"].topk(min(self.mistakes, len(batch["confidence"]))).indices
        self._worst = {key: value[keep] for key, value in batch.items()}

    def _gathered_worst(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, torch.Tensor] | None:
        """Every rank's kept mistakes (a collective: every rank calls it), the most confident first."""
        local = self._worst
        if trainer.world_size > 1:
            shape = self._image_shape(pl_module)
            if shape is None:
                return None
            padded = {"images": torch.zeros(self.mistakes, *shape, device=pl_module.device),
                      "confidence": torch.full((self.mistakes,), -1.0, device=pl_module.device),
                      "target": torch.zeros(self.mistakes, dtype=torch.long, device=pl_module.device),
                      "predicted": torch.zeros(self.mistakes, dtype=torch.long, device=pl_module.device)}
            if local is not None:
                count = len(local["confidence"])
                for key in padded:
                    padded[key][:count] = local[key].to(padded[key].dtype)
            gathered = {key: value.flatten(0, 1) for key, value in pl_module.all_gather(padded).items()}
            real = gathered["confidence"] >= 0
            local = {key: value[real] for key, value in gathered.items()} if real.any() else None
        if local is None:
            return None
        order = local["confidence"].argsort(descending=True)[: self.mistakes]
        return {key: value[order] for key, value in local.items()}

    def _image_shape(self, pl_module: LightningModule) -> tuple[int, ...] | None:
        """The test images' shape, the same on every rank (needed to pad a rank that kept no mistake)."""
        shape = torch.zeros(4, dtype=torch.long, device=pl_module.device)
        if self._worst is not None:
            shape[: self._worst["images"].dim() - 1] = torch.tensor(self._worst["images"].shape[1:])
        largest = pl_module.all_gather(shape).max(dim=0).values
        return tuple(int(s) for s in largest if s > 0) or None

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.metrics is None:  # no test batch ran
            return
        values = self.metrics.compute()  # synced across DDP ranks by torchmetrics
        calibration = self.metrics["ece"]
        with calibration.sync_context():  # every rank's confidences, for the diagram
            bins = reliability_bins(dim_zero_cat(calibration.confidences), dim_zero_cat(calibration.accuracies), self.bins)
        worst = self._gathered_worst(trainer, pl_module) if self.mistakes else None
        self.metrics.reset()
        self.confusion = values["confusion"].cpu()
        names = getattr(getattr(trainer, "datamodule", None), "classes", None)
        num_classes = len(self.confusion)
        self.class_names = [str(n) for n in names] if names is not None and len(names) == num_classes else [
            str(i) for i in range(num_classes)]
        results = {f"test/macro_{name}": float(values[f"{name}_macro"]) for name in PER_CLASS}
        results["test/ece"] = float(values["ece"])
        if f"top{self.top_k}_acc" in values:
            results[f"test/top{self.top_k}_acc"] = float(values[f"top{self.top_k}_acc"])
        for name in PER_CLASS:
            results.update({f"test/{name}/{cls}": float(v) for cls, v in zip(self.class_names, values[f"{name}_per_class"], strict=True)})
        self.results = results
        # The values are equal on every rank already; sync_dist (a mean of equal numbers) keeps Lightning from warning.
        pl_module.log_dict(results, sync_dist=True)
        self.shown_mistakes = [] if worst is None else [
            (self.class_names[int(t)], self.class_names[int(p)], float(c))
            for t, p, c in zip(worst["target"], worst["predicted"], worst["confidence"], strict=True)]
        if trainer.is_global_zero:
            self._publish(trainer, bins, worst)

    def _publish(self, trainer: Trainer, bins: dict[str, torch.Tensor], worst: dict[str, torch.Tensor] | None) -> None:
        """Write the files into the run folder and send the figures to W&B (rank zero)."""
        folder, logger = run_folder(trainer), wandb_logger(trainer)
        if folder is None and logger is None:
            return
        images = {"confusion_matrix": confusion_figure(self.confusion, self.class_names),
                  "reliability": reliability_figure(bins, self.results["test/ece"])}
        if self.mistakes:
            state = getattr(getattr(trainer, "datamodule", None), "preprocess_state", None)
            pictures = undo_preprocessing(worst["images"], state) if worst is not None else torch.zeros(0)
            images["mistakes"] = mistakes_figure(pictures, self.shown_mistakes)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self._write_tables(folder)
            for name, image in images.items():
                image.save(folder / f"{name}.png")
            self.folder = folder
            rank_zero_info(f"Evaluation report: {folder}/per_class.csv, confusion_matrix.csv and PNGs "
                           f"(macro F1 {self.results['test/macro_f1']:.4f}, ECE {self.results['test/ece']:.4f})")
        if logger is not None:
            import wandb

            # W&B's native chart takes per-image labels: the matrix's cells, each repeated by its count.
            pairs = torch.cartesian_prod(torch.arange(len(self.confusion)), torch.arange(len(self.confusion)))
            repeated = pairs.repeat_interleave(self.confusion.flatten(), dim=0).tolist()
            chart = wandb.plot.confusion_matrix(y_true=[t for t, _ in repeated], preds=[p for _, p in repeated],
                                                class_names=self.class_names, title="Test confusion matrix")
            logger.experiment.log({"test/confusion_matrix_chart": chart})
            for name, image in images.items():
                logger.log_image(f"test/{name}", [image])

    def _write_tables(self, folder: Path) -> None:
        support = self.confusion.sum(dim=1).tolist()
        with open(folder / "per_class.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["class", *PER_CLASS, "support"])
            for cls, count in zip(self.class_names, support, strict=True):
                writer.writerow([cls, *(f"{self.results[f'test/{name}/{cls}']:.6g}" for name in PER_CLASS), int(count)])
        with open(folder / "confusion_matrix.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["true \\ predicted", *self.class_names])
            for cls, row in zip(self.class_names, self.confusion.tolist(), strict=True):
                writer.writerow([cls, *row])
