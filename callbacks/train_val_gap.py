"""D3 — Train/validation accuracy gap: big gap = overfitting, no gap and low accuracy = too little capacity.

Lecture: "Insights from figures: the accuracy — big gap = overfitting => increase regularization
strength; no gap => increase model capacity" (CS231n).

Card:
    What: at each epoch end reads the training and validation accuracy the module logged
        (`train/acc`, `val/acc` by default) and names the regime with the lecture's advice.
    When it helps: deciding whether the next run needs more regularization or a bigger model.
    Cost: none (two numbers the module already logs).

Why here: no Lightning callback or torchmetrics metric compares train and validation metrics.

Rules (thresholds are arguments): gap = train accuracy - validation accuracy;
    overfitting: gap > `max_gap`;
    under-capacity: gap <= `max_gap` and train accuracy < `min_accuracy` (the model cannot even
        fit its training data: "no gap" is only a problem when accuracy is low);
    good: otherwise. `min_accuracy` is task-dependent: 0.9 suits digits/MNIST, lower it for CIFAR-100.

Recipes to try (the finding's `recipes`, for the report's `compare` command): overfitting, augmentations
valid on any dataset and regularizers; under-capacity, `model/wider`. Those that set the default sized
convnet's options are left out when the module's `hparams` name another backbone or options of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from ..utils.plots import line_plot
from ._diagnostics import TRY, Finding, Section, announce, fitting_recipes

__all__ = ["GapDiagnosis", "TrainValGap", "diagnose_gap"]

VERDICTS = {
    "overfitting": ("overfitting: big gap between training and validation accuracy",
                    "increase regularization strength (weight decay, dropout, augmentation, max-norm)"),
    "under_capacity": ("under-capacity: no gap, but low accuracy",
                       "increase model capacity (wider or deeper backbone), or weaken the regularization"),
    "good": ("good fit: small gap and high accuracy", "keep the capacity/regularization balance"),
}


@dataclass
class GapDiagnosis:
    kind: str
    train_acc: float
    val_acc: float

    @property
    def gap(self) -> float:
        return self.train_acc - self.val_acc

    @property
    def verdict(self) -> str:
        return VERDICTS[self.kind][0] + f" (train {self.train_acc:.3f}, val {self.val_acc:.3f}, gap {self.gap:+.3f})"

    @property
    def advice(self) -> str:
        return VERDICTS[self.kind][1]


def diagnose_gap(train_acc: float, val_acc: float, max_gap: float = 0.1, min_accuracy: float = 0.9) -> GapDiagnosis:
    """Name the regime from the two accuracies.

    Example:
        >>> diagnose_gap(1.0, 0.7).kind, diagnose_gap(0.4, 0.38).kind, diagnose_gap(0.99, 0.97).kind
        ('overfitting', 'under_capacity', 'good')
    """
    if train_acc - val_acc > max_gap:
        kind = "overfitting"
    elif train_acc < min_accuracy:
        kind = "under_capacity"
    else:
        kind = "good"
    return GapDiagnosis(kind, float(train_acc), float(val_acc))


class TrainValGap(Callback):
    """Compare training and validation accuracy each epoch (D3) and say what to change.

    Args:
        train_metric, val_metric: the logged epoch metrics to compare.
        max_gap: a train-val gap above this is overfitting.
        min_accuracy: without a big gap, a training accuracy below this is under-capacity.

    `self.diagnosis` is the latest `GapDiagnosis`; `self.history` has (epoch, train, val) per epoch.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[TrainValGap(max_gap=0.05, min_accuracy=0.6)])
    """

    def __init__(self, train_metric: str = "train/acc", val_metric: str = "val/acc", max_gap: float = 0.1,
                 min_accuracy: float = 0.9) -> None:
        if not 0 < max_gap < 1:
            raise ValueError(f"TrainValGap(max_gap={max_gap}): use an accuracy difference in (0, 1), e.g. 0.1.")
        if not 0 < min_accuracy <= 1:
            raise ValueError(f"TrainValGap(min_accuracy={min_accuracy}): use an accuracy in (0, 1], e.g. 0.9.")
        self.train_metric, self.val_metric = train_metric, val_metric
        self.max_gap, self.min_accuracy = max_gap, min_accuracy
        self.history: list[tuple[int, float, float]] = []
        self.diagnosis: GapDiagnosis | None = None
        self.backbone: str | None = None  # the module's hparams "backbone" and "backbone_options", when it has them
        self.backbone_options: dict | None = None
        self._warned = False

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning has reduced the epoch metrics by now (after validation, before this hook).
        metrics = trainer.callback_metrics
        if self.train_metric not in metrics or self.val_metric not in metrics:
            if not self._warned and not trainer.sanity_checking:
                self._warned = True
                rank_zero_warn(f"TrainValGap: metrics {self.train_metric!r} and {self.val_metric!r} are needed; logged: "
                               f"{sorted(metrics)}. Set train_metric/val_metric to the accuracy your module logs.")
            return
        train, val = float(metrics[self.train_metric]), float(metrics[self.val_metric])
        hparams = getattr(pl_module, "hparams", {})
        self.backbone, self.backbone_options = hparams.get("backbone"), hparams.get("backbone_options")
        self.history.append((trainer.current_epoch, train, val))
        self.diagnosis = diagnose_gap(train, val, self.max_gap, self.min_accuracy)
        announce(trainer, "D3_verdict", self.findings()[0])

    def findings(self) -> list[Finding]:
        if self.diagnosis is None:
            return []
        kind = self.diagnosis.kind
        return [Finding("D3", self.diagnosis.verdict, self.diagnosis.advice, healthy=kind == "good",
                        recipes=fitting_recipes(TRY.get(kind, ()), self.backbone, self.backbone_options))]

    def report_section(self) -> Section:
        epochs = [e for e, _, _ in self.history]
        plot = line_plot({"train acc": (epochs, [t for _, t, _ in self.history]),
                          "val acc": (epochs, [v for _, _, v in self.history]),
                          "gap": (epochs, [t - v for _, t, v in self.history])},
                         "D3 training vs validation accuracy and their gap, per epoch", "epoch", "accuracy",
                         notes=[f.line() for f in self.findings()])
        lines = [f"Thresholds: gap > {self.max_gap} is overfitting; otherwise train accuracy < {self.min_accuracy} is under-capacity.",
                 "", "| epoch | train | val | gap |", "|---|---|---|---|"]
        lines += [f"| {e} | {t:.3f} | {v:.3f} | {t - v:+.3f} |" for e, t, v in self.history]
        return Section("Train/validation accuracy gap (D3)", self.findings(), lines, {"accuracy_gap": plot})
