"""Shared plumbing of the diagnostic callbacks (D1–D4, F8) and the training report.

A diagnostic callback keeps its own history and exposes `report_section()`, returning a `Section`
(findings with advice, Markdown lines, matplotlib figures rendered as PIL images by `plots`);
`TrainingReport` collects the sections of every diagnostic on the trainer by that method's presence,
so no diagnostic imports the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pytorch_lightning import Trainer
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_info


@dataclass
class Finding:
    """One diagnosis: which trick saw it (`source`, a trick ID of docs/tricks.md), what it saw, what to do."""

    source: str
    verdict: str
    advice: str
    healthy: bool = False

    def line(self) -> str:
        return f"[{self.source}] {self.verdict} -> {self.advice}"


@dataclass
class Section:
    """A diagnostic's part of the report: findings, Markdown lines and images (name -> PIL image, from `plots`)."""

    title: str
    findings: list[Finding] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    images: dict = field(default_factory=dict)


def run_folder(trainer: Trainer) -> Path | None:
    """The run's folder: logger save_dir/name/version, the rule ModelCheckpoint uses for `checkpoints/`.
    The project's CLI saves each run's `config.yaml` there too. None under fast_dev_run (Lightning's
    DummyLogger: nothing is written to disk)."""
    if trainer.fast_dev_run:
        return None
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir, str(logger.name), version)


def wandb_logger(trainer: Trainer) -> WandbLogger | None:
    """The trainer's W&B logger, if it has one (images and the run summary go there)."""
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def announce(trainer: Trainer, key: str, finding: Finding, when: str | None = None) -> None:
    """Say a finding on the console (rank zero) and put it in the W&B run summary, live."""
    if not trainer.is_global_zero:
        return
    rank_zero_info(f"{when or f'epoch {trainer.current_epoch}'}: {finding.line()}")
    logger = wandb_logger(trainer)
    if logger is not None:
        logger.experiment.summary[f"diagnose/{key}"] = finding.line()
