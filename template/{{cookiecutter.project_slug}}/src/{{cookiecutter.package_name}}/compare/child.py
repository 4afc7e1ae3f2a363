"""One run of a comparison: `fit`, then the test split on its best checkpoint, in one process.

    python -m <package>.compare.child --result R.json --name baseline-seed0 --group compare-1a2b3c4d -- <fit arguments>

The project's CLI parses and fits as `<slug> fit <fit arguments>` would; then the same Trainer tests the
best checkpoint (`trainer.test(ckpt_path="best")`, one process instead of a second start-up for
`<slug> test --ckpt_path best`) with `TestMetrics` attached, which measures accuracy, NLL and expected
calibration error from the model's own test-time logits. `R.json` is written (atomically) only when
the fit finished: an interrupted run leaves no result and runs again from scratch.

The logger of the run is named after it: W&B runs get `name` and `group` (one group per comparison),
CSV/TensorBoard runs the folder `<group>/<name>` (parallel runs never race for `version_N`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.loggers import WandbLogger
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError
from typing_extensions import override

from ..callbacks import run_folder
from ..cli import CLI

__all__ = ["TestMetrics", "main"]


class TestMetrics(Callback):
    """Accuracy, NLL (mean cross-entropy) and expected calibration error (ECE, Guo et al. 2017: the
    |accuracy - confidence| gap over `bins` equal-width confidence bins, weighted by their share of
    samples) of the test split, from the logits of the model under test.

    The model's own `test/loss` and `test/acc` are logged under the names its `test_step` chooses and
    ECE may not be logged at all; measuring here with torchmetrics (synchronized across DDP ranks) keeps
    the comparison independent of both. It costs a second forward pass over the test split.
    """

    def __init__(self, bins: int = 15) -> None:
        if bins < 1:
            raise ValueError(f"TestMetrics(bins={bins}): use 1 or more confidence bins, e.g. 15.")
        self.bins = bins
        self.metrics: MetricCollection | None = None
        self.nll: MeanMetric | None = None
        self.results: dict[str, float] = {}

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.metrics, self.nll, self.results = None, None, {}

    @override
    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        images, targets = batch[0], batch[-1]
        logits = pl_module(images).float()
        if self.metrics is None:
            classes = logits.shape[-1]
            self.metrics = MetricCollection({
                "test_acc": MulticlassAccuracy(classes, average="micro"),
                "test_ece": MulticlassCalibrationError(classes, n_bins=self.bins, norm="l1"),
            }).to(logits.device)
            self.nll = MeanMetric().to(logits.device)
        self.metrics.update(logits, targets)
        self.nll.update(F.cross_entropy(logits, targets, reduction="none"))

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.metrics is None:
            raise RuntimeError("TestMetrics: the test split gave no batch; check data.test_fraction.")
        self.results = {name: float(value) for name, value in self.metrics.compute().items()}
        self.results["test_nll"] = float(self.nll.compute())


def _logger_class(spec: Any) -> type | None:
    module, _, name = str(getattr(spec, "class_path", "") or "").rpartition(".")
    return getattr(importlib.import_module(module), name, None) if module else None


class _RunCLI(CLI):
    """The project's CLI with the run's logger named after it (see the module docstring)."""

    def __init__(self, args: list[str], name: str, group: str, root_dir: Path, callbacks: list[Callback]) -> None:
        self.run_name, self.group, self.root_dir = name, group, root_dir
        self.wandb_settings: dict[str, Any] | None = None
        super().__init__(args=args, trainer_defaults={"callbacks": callbacks})

    @override
    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        trainer = self._section().trainer
        trainer.default_root_dir = str(self.root_dir)  # the checkpoints of a run without a logger
        specs = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        for spec in specs:
            cls = _logger_class(spec)
            if cls is None or spec.get("init_args") is None:
                continue
            if issubclass(cls, WandbLogger):
                spec.init_args.name = self.run_name
                # wandb.init's own options go through the logger's **kwargs (jsonargparse's dict_kwargs).
                spec.dict_kwargs = {**(spec.get("dict_kwargs") or {}), "group": self.group}
                self.wandb_settings = {key: spec.init_args.get(key) for key in ("project", "entity", "save_dir")}
            elif "name" in spec.init_args:
                spec.init_args.name = f"{self.group}/{self.run_name}"


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m <package>.compare.child", description=__doc__.split("\n")[0])
    parser.add_argument("--result", type=Path, required=True, help="where the run's metrics JSON goes")
    parser.add_argument("--name", required=True, help="the run's name (logger run / folder)")
    parser.add_argument("--group", required=True, help="the comparison's W&B group and CSV/TensorBoard folder")
    parser.add_argument("--root_dir", type=Path, required=True, help="trainer.default_root_dir of the run")
    parser.add_argument("fit_args", nargs=argparse.REMAINDER, help="after --: the arguments of `fit`")
    args = parser.parse_args(argv)
    fit_args = args.fit_args[1:] if args.fit_args[:1] == ["--"] else args.fit_args
    timer, measured = Timer(verbose=False), TestMetrics()
    cli = _RunCLI(["fit", *fit_args], args.name, args.group, args.root_dir, [timer, measured])
    trainer = cli.trainer
    if trainer.interrupted or not trainer.state.finished:
        raise SystemExit(f"{args.name}: the fit did not finish ({trainer.state.status}); no result written.")
    train_seconds = timer.time_elapsed("train")  # before test: loading a checkpoint resets the Timer's offset
    checkpoint = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint or None, verbose=False)
    config = cli.config["fit"]
    result = {
        **measured.results,
        "train_seconds": train_seconds,
        "seed_everything": config.seed_everything,
        "num_folds": config.data.num_folds,
        "fold": config.data.fold,
        "checkpoint": checkpoint or "final weights (no ModelCheckpoint)",
        "run_folder": str(run_folder(trainer)),
        "wandb": cli.wandb_settings,
        "device": str(torch.device(trainer.strategy.root_device)),
        # What the diagnostic callbacks of the run concluded (D1-D4, F8), one line each: a study reads
        # e.g. the LR-curve verdict per arm from here.
        "findings": [finding.line() for callback in trainer.callbacks if callable(getattr(callback, "findings", None))
                     for finding in callback.findings()],
    }
    if trainer.is_global_zero:
        _write_atomically(args.result, result)
    return result


if __name__ == "__main__":
    main()
