"""One run of a comparison: `fit`, then the test split on what the run trained, in one process.

    python -m <package>.compare.child --result R.json --name baseline-seed0 --group compare-1a2b3c4d -- <fit arguments>

The project's CLI parses and fits as `<slug> fit <fit arguments>` would; then the same Trainer tests the
best checkpoint's weights (what `<slug> test --ckpt_path best` tests, one process instead of a second
start-up) with `TestMetrics` attached, which measures accuracy, NLL and expected calibration error from
the model's own test-time logits. `R.json` is written (atomically) only when the fit finished: an
interrupted run leaves no result and runs again from scratch.

What a run is measured by (`test_*` in R.json, named in its `"evaluated"`) follows what it trained:
    - a kept ensemble (E3): the last `ensemble_size` snapshots of a SnapshotEnsemble, else the
      checkpoints of a ModelCheckpoint besides the primary one that keeps several (`save_top_k` > 1
      or -1, e.g. recipes/ensemble/checkpoints.yaml), their probabilities averaged (EnsembleModule);
    - SWA (E4, Lightning's StochasticWeightAveraging): the average the fit ends with (its BatchNorm
      statistics recomputed), which the best checkpoint need not hold;
    - otherwise the best checkpoint; under EMA (Lightning's EMAWeightAveraging) its weights are the
      average, which validation picked it by (Trainer.test(ckpt_path=...) in the fitting process
      would restore the raw weights the checkpoint also carries).
The best checkpoint's own metrics are `single_test_*` either way, so an ensemble or an average shows
next to the single model of the same training. Ensembles and averages are measured with TestMetrics
only (the run's loggers and report callbacks describe the best checkpoint's test).

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
from pytorch_lightning.callbacks import (
    EMAWeightAveraging,
    ModelCheckpoint,
    StochasticWeightAveraging,
    Timer,
    WeightAveraging,
)
from pytorch_lightning.loggers import WandbLogger
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError
from typing_extensions import override

from ..callbacks import SnapshotEnsemble, run_folder
from ..cli import CLI
from ..ensemble.checkpoints import load_checkpoint
from ..ensemble.module import EnsembleModule

__all__ = ["TestMetrics", "kept_ensemble", "main", "measured_logits"]

PROBABILITY_FLOOR = 1e-12  # the ensemble's NLL floor (utils.ensembling.nll): a vote's zeros stay finite


def measured_logits(module: LightningModule, images: torch.Tensor) -> torch.Tensor:
    """The logits of `module` (float32); for an EnsembleModule, whose forward gives the averaged class
    probabilities, their logarithm: softmax gives the same probabilities back (accuracy, ECE) and
    cross-entropy is their NLL."""
    output = module(images).float()
    if isinstance(module, EnsembleModule):
        return output.clamp_min(PROBABILITY_FLOOR).log()
    return output


class _Unlogged(LightningModule):
    """`model` under test with nothing of its own logged: the run's own test already logged `test/acc` etc.
    with other arguments (Lightning refuses that in one Trainer), and TestMetrics makes the one forward pass."""

    def __init__(self, model: LightningModule) -> None:
        super().__init__()
        self.model = model

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return measured_logits(self.model, images)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        return None


class TestMetrics(Callback):
    """Accuracy, NLL (mean cross-entropy) and expected calibration error (ECE, Guo et al. 2017: the
    |accuracy - confidence| gap over `bins` equal-width confidence bins, weighted by their share of
    samples) of the test split, from the logits of the model under test. An EnsembleModule gives class
    probabilities instead (averaged over its members); they are measured as they are: NLL and ECE of
    the averaged probabilities.

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
        logits = measured_logits(pl_module, images)
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


def kept_ensemble(trainer: Trainer) -> tuple[str, list[Path]] | None:
    """(description, checkpoint files) of the ensemble the run kept, or None (rules in the module docstring).

    Read right after fit: loading a checkpoint into the Trainer would reset the callbacks' state to the file's.
    """
    for callback in sorted(trainer.callbacks, key=lambda c: not isinstance(c, SnapshotEnsemble)):  # snapshots first
        if isinstance(callback, SnapshotEnsemble) and callback.snapshots:
            cycles = sorted(callback.snapshots)[-callback.ensemble_size:]
            found = f"snapshot ensemble of {len(cycles)}", [Path(callback.snapshots[c]) for c in cycles]
        elif (isinstance(callback, ModelCheckpoint) and callback is not trainer.checkpoint_callback
              and (callback.save_top_k > 1 or callback.save_top_k == -1) and callback.best_k_models):
            ranked = sorted(callback.best_k_models, key=lambda p: float(callback.best_k_models[p]),
                            reverse=callback.mode == "max")
            label = f"top-{len(ranked)} checkpoint ensemble" if callback.save_top_k > 1 else f"checkpoint ensemble of {len(ranked)} epochs"
            found = label, [Path(p) for p in ranked]
        else:
            continue
        missing = [str(p) for p in found[1] if not p.is_file()]
        if missing:
            raise SystemExit(f"The run's {found[0]} lacks {', '.join(missing)}: removed, or never kept (fast_dev_run). "
                             "Train without fast_dev_run and leave the files in place until the run's result is written.")
        return found
    return None


def _averaging(trainer: Trainer) -> str | None:
    """Which weight average the run trained with: 'SWA' (once it started), 'EMA', 'averaged' (WeightAveraging), None."""
    for callback in trainer.callbacks:
        if isinstance(callback, StochasticWeightAveraging) and callback.n_averaged is not None and int(callback.n_averaged) > 0:
            return "SWA"
        if isinstance(callback, EMAWeightAveraging):
            return "EMA"
        if isinstance(callback, WeightAveraging):
            return "averaged"
    return None


def _measure(trainer: Trainer, module: LightningModule, datamodule: Any) -> dict[str, float]:
    """TestMetrics of `module` on the test split with the run's Trainer (its devices, precision, DDP ranks),
    none of its other callbacks and no logger: those describe the run's own test."""
    measured = TestMetrics()
    callbacks, loggers = trainer.callbacks, trainer.loggers
    trainer.callbacks, trainer.loggers = [measured], []
    try:
        trainer.test(_Unlogged(module), datamodule=datamodule, verbose=False)
    finally:
        trainer.callbacks, trainer.loggers = callbacks, loggers
    return measured.results


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
    train_seconds = timer.time_elapsed("train")
    checkpoint = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ensemble, averaging = kept_ensemble(trainer), _averaging(trainer)
    # Checkpoints hold the average under EMA (WeightAveraging saves it as their state_dict), never under SWA.
    saved = f" ({averaging} weights)" if averaging in ("EMA", "averaged") else ""
    other: dict[str, float] | None = None  # an ensemble's or SWA's metrics, which then are the run's
    if ensemble is not None:
        evaluated = ensemble[0] + saved
        other = _measure(trainer, EnsembleModule([str(p) for p in ensemble[1]]), cli.datamodule)
    elif averaging == "SWA" and checkpoint:
        evaluated = "SWA average (the final weights)"
        other = _measure(trainer, cli.model, cli.datamodule)  # before the best checkpoint replaces them
    elif checkpoint:
        evaluated = "best checkpoint" + saved
    else:
        evaluated = "final weights" + (f" ({averaging} average)" if averaging else "")
    if checkpoint:
        # Its state_dict, as a test in a new process loads it; Trainer.test(ckpt_path=...) here would also restore
        # the callbacks, and WeightAveraging would put the raw weights back in place of the average.
        cli.model.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    single = measured.results
    config = cli.config["fit"]
    result = {
        **(other or single),
        "evaluated": evaluated,
        **{f"single_{key}": value for key, value in single.items()},
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
