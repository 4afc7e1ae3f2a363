"""D1/D2 — Learning-rate and loss-curve diagnosis: name the training-loss curve's shape, and its noise.

Lecture: "Insights from figures: the learning rate" (CS231n's four curves: very high LR explodes,
high LR drops fast then stalls on a high plateau, low LR decreases slowly and nearly linearly,
good LR) and "the loss curve" (a very noisy curve means the batch is too small).

Card:
    What: records the training loss of every step and the LR; at each epoch end (and at fit end)
        classifies the curve so far and says what to do, in the lecture's words ("divide the LR by
        2 (or by 5)"); flags a noisy curve (batch too small).
    When it helps: first runs on a new dataset/model, before spending epochs on a bad LR.
    Cost: one detached scalar per step, converted once per epoch; nothing on the GPU.

Why here: Lightning's `LearningRateFinder` searches an LR before training but does not read the
curve of the run you actually train; nothing in Lightning/torchmetrics names curve shapes.

How the curve is read (all thresholds are arguments), with L0 the first step's loss and the curve
smoothed into `windows` window means m[0..K-1]:
    very high ("LR too high, loss explodes"): a non-finite loss, a loss above `explode_factor`·L0,
        or a final level above (1 + `rise_tolerance`)·L0.
    low ("LR too low"): the loss fell by less than `low_drop`·L0; or by less than `linear_drop`·L0
        with the second half falling at least `linear_ratio` times as much as the first (no bend).
    high ("LR too high, high plateau"): the second half moves by less than `plateau_tolerance`·L0
        while the level stays above `plateau_level`·L0.
    good: anything else (a large drop that bends and keeps going down, or ends low).
    noisy: the std of the step losses around their running median exceeds `noise_threshold`·L0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from ..utils.plots import line_plot
from ._diagnostics import TRY, Finding, Section, announce

__all__ = ["CurveDiagnosis", "LossCurveDiagnosis", "diagnose_loss_curve"]

VERDICTS = {
    "very_high": ("LR too high: the loss explodes (very high learning rate)",
                  "divide the LR by 10 or more; check inputs are normalized"),
    "high": ("LR too high: fast drop, then a high plateau",
             "divide the LR by 2 (or by 5) and keep going; a plateau schedule does it for you"),
    "low": ("LR too low: slow, nearly linear decrease",
            "multiply the LR by 3-10 (a typical value is 0.1)"),
    "good": ("good LR: fast decrease that bends and keeps improving",
             "keep it; divide the LR by 2 (or by 5) when the validation set stops improving"),
    "short": ("too few steps to read the curve yet", "train longer before judging the LR"),
}
NOISY = ("noisy loss curve: the batch may be too small",
         "increase the batch size (the mean-reduced loss keeps the LR valid), or smooth with a lower LR")


@dataclass
class CurveDiagnosis:
    """What `diagnose_loss_curve` saw: `kind` in very_high/high/low/good/short, `noisy`, and the numbers."""

    kind: str
    noisy: bool
    drop: float
    noise: float
    steps: int

    @property
    def verdict(self) -> str:
        return VERDICTS[self.kind][0]

    @property
    def advice(self) -> str:
        return VERDICTS[self.kind][1]


def _running_median(values: torch.Tensor, window: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(values[None, None], (window // 2, window // 2), mode="replicate")[0, 0]
    return padded.unfold(0, window, 1).median(dim=1).values


def diagnose_loss_curve(
    losses: Sequence[float],
    min_steps: int = 10,
    windows: int = 10,
    explode_factor: float = 4.0,
    rise_tolerance: float = 0.1,
    low_drop: float = 0.25,
    linear_drop: float = 0.5,
    linear_ratio: float = 0.6,
    plateau_tolerance: float = 0.05,
    plateau_level: float = 0.3,
    noise_threshold: float = 0.1,
) -> CurveDiagnosis:
    """Classify a training-loss curve (one value per step); see the module docstring for the rules.

    Example:
        >>> diagnose_loss_curve([2.3 - 0.001 * i for i in range(50)]).kind
        'low'
        >>> diagnose_loss_curve([2.3, 50.0] + [float("nan")] * 20).kind
        'very_high'
    """
    values = torch.tensor([float(v) for v in losses], dtype=torch.float64)
    steps = len(values)
    if steps < max(min_steps, 2):
        return CurveDiagnosis("short", False, 0.0, 0.0, steps)
    start = max(abs(values[0].item()), 1e-12)
    finite = torch.isfinite(values)
    if not finite.all() or values.max().item() > explode_factor * start:
        return CurveDiagnosis("very_high", False, float("nan"), float("nan"), steps)
    count = max(2, min(windows, steps // 3))
    means = torch.stack([chunk.mean() for chunk in values.tensor_split(count)])
    end = means[-1].item()
    drop = (start - end) / start
    window = max(5, steps // 10) | 1
    noise = (values - _running_median(values, window)).std().item() / start
    noisy = noise > noise_threshold
    half = means[count // 2:]
    first_half_drop = start - means[count // 2].item()
    second_half_drop = means[count // 2].item() - end
    if end > (1 + rise_tolerance) * start:
        kind = "very_high"
    elif drop < low_drop:
        kind = "low"
    elif drop < linear_drop and second_half_drop >= linear_ratio * max(first_half_drop, 1e-12):
        kind = "low"
    elif (half.max() - half.min()).item() < plateau_tolerance * start and end > plateau_level * start:
        kind = "high"
    else:
        kind = "good"
    return CurveDiagnosis(kind, noisy, drop, noise, steps)


class LossCurveDiagnosis(Callback):
    """Read the training-loss curve each epoch and name the learning rate it shows (D1) and its noise (D2).

    Args:
        min_steps: steps recorded before the first verdict.
        explode_factor, rise_tolerance, low_drop, linear_drop, linear_ratio, plateau_tolerance,
            plateau_level, noise_threshold: thresholds of `diagnose_loss_curve` (module docstring).

    `self.diagnosis` holds the latest `CurveDiagnosis`, `self.losses`/`self.lrs` the curves.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[LossCurveDiagnosis(noise_threshold=0.2)])
    """

    def __init__(
        self,
        min_steps: int = 10,
        explode_factor: float = 4.0,
        rise_tolerance: float = 0.1,
        low_drop: float = 0.25,
        linear_drop: float = 0.5,
        linear_ratio: float = 0.6,
        plateau_tolerance: float = 0.05,
        plateau_level: float = 0.3,
        noise_threshold: float = 0.1,
    ) -> None:
        if min_steps < 2:
            raise ValueError(f"LossCurveDiagnosis(min_steps={min_steps}): need at least 2 steps to read a curve, e.g. 10.")
        if not explode_factor > 1:
            raise ValueError(f"LossCurveDiagnosis(explode_factor={explode_factor}): must exceed 1 (a loss that grows), e.g. 4.")
        for name, value in (("rise_tolerance", rise_tolerance), ("low_drop", low_drop), ("linear_drop", linear_drop),
                            ("linear_ratio", linear_ratio), ("plateau_tolerance", plateau_tolerance),
                            ("plateau_level", plateau_level), ("noise_threshold", noise_threshold)):
            if not value > 0:
                raise ValueError(f"LossCurveDiagnosis({name}={value}): must be positive (a fraction of the first loss).")
        if not low_drop <= linear_drop:
            raise ValueError(f"LossCurveDiagnosis(low_drop={low_drop}, linear_drop={linear_drop}): low_drop must not exceed linear_drop.")
        self.thresholds = dict(min_steps=min_steps, explode_factor=explode_factor, rise_tolerance=rise_tolerance,
                               low_drop=low_drop, linear_drop=linear_drop, linear_ratio=linear_ratio,
                               plateau_tolerance=plateau_tolerance, plateau_level=plateau_level,
                               noise_threshold=noise_threshold)
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self._pending: list[torch.Tensor] = []
        self.diagnosis: CurveDiagnosis | None = None
        self.history: list[tuple[str, str, bool]] = []

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._pending.append(loss.detach().float().reshape(()))  # no .item(): no sync per step
            optimizer = trainer.optimizers[0] if trainer.optimizers else None
            self.lrs.append(float(optimizer.param_groups[0]["lr"]) if optimizer else math.nan)

    def _flush(self) -> None:
        if self._pending:
            self.losses += torch.stack(self._pending).cpu().tolist()
            self._pending = []

    def findings(self) -> list[Finding]:
        if self.diagnosis is None:
            return []
        kind = self.diagnosis.kind
        found = [Finding("D1", self.diagnosis.verdict, self.diagnosis.advice, healthy=kind == "good",
                         recipes=TRY.get(f"lr_{kind}", ()))]
        if self.diagnosis.noisy:
            found.append(Finding("D2", NOISY[0] + f" (noise {self.diagnosis.noise:.2f} of the first loss)", NOISY[1],
                                 recipes=TRY["noisy_loss"]))
        return found

    def _diagnose(self, trainer, when: str) -> None:
        self._flush()
        self.diagnosis = diagnose_loss_curve(self.losses, **self.thresholds)
        self.history.append((when, self.diagnosis.kind, self.diagnosis.noisy))
        for finding in self.findings():
            announce(trainer, f"{finding.source}_verdict", finding, when)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._diagnose(trainer, f"epoch {trainer.current_epoch}")

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._diagnose(trainer, "end of fit")

    def report_section(self) -> Section:
        self._flush()
        steps = list(range(len(self.losses)))
        notes = [f.line() for f in self.findings()]
        positive = all(v > 0 for v in self.losses if math.isfinite(v))
        finite = [v for v in self.losses if math.isfinite(v)]
        log_y = positive and bool(finite) and max(finite) > 20 * max(min(finite), 1e-12)
        loss_plot = line_plot({"train loss": (steps, self.losses)}, "D1/D2 training loss per step", "step", "loss",
                              notes=notes, log_y=log_y)
        lr_plot = line_plot({"lr": (list(range(len(self.lrs))), self.lrs)}, "learning rate per step", "step", "learning rate")
        lines = [f"Steps read: {len(self.losses)}."]
        if self.diagnosis is not None and self.diagnosis.kind != "short":
            lines.append(f"Loss drop: {self.diagnosis.drop:.0%} of the first loss; noise: {self.diagnosis.noise:.3f} of it.")
        lines += [f"- {when}: {VERDICTS[kind][0]}{' (noisy)' if noisy else ''}" for when, kind, noisy in self.history]
        return Section("Loss curve and learning rate (D1, D2)", self.findings(), lines,
                       {"loss_curve": loss_plot, "learning_rate": lr_plot})
