"""D1–D4, F8 — End-of-fit training report: the diagnostics' figures and findings in one Markdown file.

Lecture: "Insights from figures" — the lecture reads the LR/loss/accuracy curves and the first-layer
weights by eye; this report puts those figures side by side with the verdicts the diagnostic
callbacks (`LossCurveDiagnosis`, `TrainValGap`, `FirstLayerFilters`, `ActivationHealth`) drew.

Card:
    What: at fit end writes `<run folder>/report/report.md` with matplotlib PNGs (loss and LR curves
        annotated with the verdicts, train/val accuracy with the gap, filter grids over epochs,
        activation health, every epoch metric the module logged) and the list of findings with
        advice; each problem names the recipes to try, and one `lightning compare` command tries them
        (at most 4 arms, seeds 0 1 2) against this run's own `config.yaml`, the resolved config the
        project's CLI saves in the run folder. The command is printed at fit end too; with a W&B
        logger the same images go to the run, the findings and the command to its summary.
    When it helps: after every run you mean to look at; one file to read instead of a dashboard.
    Cost: a few PNGs at the end of fit.

Why here: Lightning has no report; W&B shows curves but does not read them.

The run folder follows `_diagnostics.run_folder`'s rule (logger save_dir/name/version, the folder
that holds `checkpoints/`). Under `fast_dev_run` (Lightning swaps the logger for a DummyLogger and
writes nothing) the report is built in memory but not written.
"""

from __future__ import annotations

import math
from pathlib import Path

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from typing_extensions import override

from ..utils.plots import line_plot
from ._diagnostics import Finding, Section, compare_command, run_folder, wandb_logger

__all__ = ["TrainingReport", "render_report"]


def _finding_item(finding: Finding) -> str:
    tried = "" if finding.healthy or not finding.recipes else "; recipes to try: " + ", ".join(f"`{r}`" for r in finding.recipes)
    return f"- **{finding.source}** {finding.verdict} → {finding.advice}{tried}"


def render_report(sections: list[Section], title: str = "Training report",
                  config: str | Path | None = None) -> tuple[str, dict]:
    """Markdown text and {file name: PIL image} for `sections`; images are linked as `<name>.png`.
    Under the findings, when a problem names recipes, the `compare` command that tries them against
    `config` (the run's saved config; None: a placeholder)."""
    findings = [f for s in sections for f in s.findings]
    lines = [f"# {title}", "", "## Findings", ""]
    problems = [f for f in findings if not f.healthy]
    lines += [_finding_item(f) for f in problems + [f for f in findings if f.healthy]]
    if not findings:
        lines.append("- no diagnostic had enough data for a verdict")
    elif not problems:
        lines += ["", "Nothing to fix: every diagnostic is healthy."]
    command = compare_command(problems, config)
    if command:
        lines += ["", f"Try: `{command}`", "",
                  "(each arm is this run's config plus one recipe, trained with the baseline on the same seeds; "
                  "`compare` reports the paired differences with 95 % CIs)"]
        if config is not None and not Path(config).is_file():
            lines.append(f"(no `{config}`: the project's CLI saves it; after a fit without it, give that fit's own "
                         "arguments after `--`)")
    images: dict = {}
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        for name, image in section.images.items():
            images[f"{name}.png"] = image
            lines += [f"![{name}]({name}.png)", ""]
        lines += section.lines
    return "\n".join(lines) + "\n", images


class TrainingReport(Callback):
    """Write the end-of-fit report of every diagnostic callback on the trainer (Markdown + PNG, and W&B).

    Works with any subset of the diagnostics; alone it still plots the epoch metrics.

    Args:
        folder_name: sub-folder of the run folder that receives `report.md` and the PNGs.

    `self.path` is the written `report.md` (None when nothing was written), `self.markdown` its
    text, `self.findings` the findings, `self.command` the `compare` command for the problems (None
    when nothing is to fix).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> from callbacks import LossCurveDiagnosis  # in a project: from <package>.callbacks import ...
        >>> trainer = Trainer(callbacks=[LossCurveDiagnosis(), TrainingReport()])
    """

    def __init__(self, folder_name: str = "report") -> None:
        if not folder_name or Path(folder_name).is_absolute() or ".." in Path(folder_name).parts:
            raise ValueError(f"TrainingReport(folder_name={folder_name!r}): give a plain sub-folder name, e.g. 'report'.")
        self.folder_name = folder_name
        self.epoch_metrics: list[tuple[int, dict[str, float]]] = []
        self.path: Path | None = None
        self.markdown = ""
        self.findings: list[Finding] = []
        self.command: str | None = None

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        self.epoch_metrics.append((trainer.current_epoch, values))

    def _metrics_section(self) -> Section:
        keys = sorted({k for _, m in self.epoch_metrics for k in m})
        def series(names):
            return {k: ([e for e, m in self.epoch_metrics], [m.get(k, math.nan) for _, m in self.epoch_metrics]) for k in names}
        images = {}
        losses = [k for k in keys if "loss" in k and not k.endswith("_step")]
        accuracies = [k for k in keys if "acc" in k]
        if losses:
            images["epoch_losses"] = line_plot(series(losses), "losses logged by the module, per epoch", "epoch", "loss")
        if accuracies:
            images["epoch_accuracies"] = line_plot(series(accuracies), "accuracies logged by the module, per epoch", "epoch", "accuracy")
        last = self.epoch_metrics[-1][1] if self.epoch_metrics else {}
        lines = ["| metric | last epoch |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in sorted(last.items())]
        return Section("Epoch metrics", [], lines, images)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        sections = [cb.report_section() for cb in trainer.callbacks if cb is not self and hasattr(cb, "report_section")]
        sections.append(self._metrics_section())
        self.findings = [f for s in sections for f in s.findings]
        folder = run_folder(trainer)
        config = folder / "config.yaml" if folder is not None else None  # where the project's CLI saved it
        self.command = compare_command([f for f in self.findings if not f.healthy], config)
        self.markdown, images = render_report(sections, config=config)
        if folder is not None:
            target = folder / self.folder_name
            target.mkdir(parents=True, exist_ok=True)
            for name, image in images.items():
                image.save(target / name)
            self.path = target / "report.md"
            self.path.write_text(self.markdown)
            rank_zero_info(f"Training report: {self.path}")
        for finding in self.findings:
            if not finding.healthy:
                rank_zero_info(f"finding: {finding.line(recipes=True)}")
        if self.command:
            rank_zero_info(f"Try: {self.command}")
        logger = wandb_logger(trainer)
        if logger is not None:
            for name, image in images.items():
                logger.log_image(f"report/{name.removesuffix('.png')}", [image])
            logger.experiment.summary["diagnose/findings"] = "\n".join(f.line(recipes=True) for f in self.findings)
            if self.command:
                logger.experiment.summary["diagnose/try"] = self.command
