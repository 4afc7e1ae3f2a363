"""T3 — LR schedule: the plateau recipe divides the LR by its factor exactly after `patience` epochs
without improvement (not before); warmup-cosine and one-cycle span the run; the LR finder writes its plot."""

from __future__ import annotations

import csv
import importlib
import math

import pytest
import yaml
from PIL import Image
from pytorch_lightning import Callback
from pytorch_lightning.loggers import CSVLogger
from tiny import BatchLRs, loader, quiet_trainer, random_images

from cnn_tricks.callbacks.lr_finder_plot import LearningRateFinderPlot, lr_curve_figure
from cnn_tricks.callbacks.lr_schedules import OneCycleSchedule, WarmupCosineSchedule, warmup_cosine_factor

from conftest import RECIPES


class EpochLR(Callback):
    """The LR in effect during each training epoch."""

    def __init__(self) -> None:
        self.lrs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def tiny_model(pkg, val_losses=None, **kwargs):
    """The project's ImageClassifier on 8x8 inputs; `val_losses[epoch]` replaces its val/loss when given."""

    class Classifier(pkg.ImageClassifier):
        def validation_step(self, batch, batch_idx):
            self.log("val/loss", float(val_losses[self.current_epoch]))

    cls = Classifier if val_losses is not None else pkg.ImageClassifier
    return cls(num_classes=3, in_channels=1, image_size=8, backbone_options={"widths": [4]}, **kwargs)


def loaders(n=8, batch=8):
    data = random_images(n)
    return loader(*data, batch_size=batch), loader(*data, batch_size=batch)


def trainer(callbacks, epochs=1, **kwargs):
    return quiet_trainer(callbacks=callbacks, max_epochs=epochs, num_sanity_val_steps=0, **kwargs)


def plateau_scheduler(factor):
    """The scheduler of recipes/train/plateau.yaml, with `factor` overridden as the recipe's comment says."""
    recipe = yaml.safe_load((RECIPES / "train/plateau.yaml").read_text())["model"]
    module, _, name = recipe["lr_scheduler"]["class_path"].rpartition(".")
    options = {**recipe["lr_scheduler"]["init_args"], "factor": factor}
    assert recipe["optimizer"]["init_args"]["lr"] == 0.1 and recipe["lr_scheduler_monitor"] == "val/loss"
    return lambda optimizer: getattr(importlib.import_module(module), name)(optimizer, **options), options["patience"]


@pytest.mark.parametrize(("factor", "epochs"), [(0.5, 10), (0.2, 6)])
def test_T3_plateau_divides_lr_by_factor_after_patience_epochs(pkg, factor, epochs):
    scheduler, patience = plateau_scheduler(factor)
    assert patience == 2
    probe = EpochLR()
    # val/loss improves for 2 epochs, then stays flat for good.
    model = tiny_model(pkg, val_losses=[3.0, 2.0] + [2.0] * 8, lr_scheduler=scheduler)
    trainer([probe], epochs=epochs).fit(model, *loaders())
    print(f"factor {factor}: LR per epoch {[round(lr, 5) for lr in probe.lrs]}")
    # Best at epoch 1; epochs 2, 3 are `patience` bad epochs (LR kept); the third bad one (epoch 4) drops it,
    # so epoch 5 trains at 0.1 * factor; three more bad epochs (5, 6, 7) drop it again for epoch 8.
    expected = [0.1] * 5 + [0.1 * factor] * 3 + [0.1 * factor**2] * 2
    assert probe.lrs == pytest.approx(expected[:epochs])


def test_T3_plateau_keeps_lr_while_val_improves(pkg):
    scheduler, _ = plateau_scheduler(0.5)
    probe = EpochLR()
    model = tiny_model(pkg, val_losses=[5.0 - epoch * 0.5 for epoch in range(5)], lr_scheduler=scheduler)
    trainer([probe], epochs=5).fit(model, *loaders())
    assert probe.lrs == pytest.approx([0.1] * 5)


def test_T3_warmup_cosine_spans_the_run(pkg):
    probe = BatchLRs()
    trainer([WarmupCosineSchedule(warmup_fraction=0.25), probe], epochs=2, limit_val_batches=0).fit(
        tiny_model(pkg), *loaders(n=64))
    # 2 epochs x 8 batches = 16 steps, 4 of warmup: 0.025, 0.05, 0.075, 0.1, then cosine down towards 0.
    assert len(probe.lrs) == 16
    assert probe.lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert all(a >= b for a, b in zip(probe.lrs[3:], probe.lrs[4:], strict=False))
    assert probe.lrs[-1] == pytest.approx(0.1 * warmup_cosine_factor(15, 16, 4)) and probe.lrs[-1] < 0.01


def test_T3_one_cycle_peaks_at_the_configured_lr(pkg):
    probe = BatchLRs()
    trainer([OneCycleSchedule(pct_start=0.25), probe], epochs=2, limit_val_batches=0).fit(tiny_model(pkg), *loaders(n=80))
    peak = max(range(len(probe.lrs)), key=probe.lrs.__getitem__)
    assert len(probe.lrs) == 20 and peak == 4  # torch's warm-up phase ends at step pct_start x 20 - 1
    assert probe.lrs[peak] == pytest.approx(0.1, rel=1e-3)
    assert probe.lrs[0] == pytest.approx(0.1 / 25) and probe.lrs[-1] < probe.lrs[0]


def test_T3_one_cycle_resumes_its_own_schedule_and_refuses_a_longer_run(pkg, tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(epochs, ckpt_path=None):
        probe = BatchLRs()
        saver = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
        trainer([OneCycleSchedule(pct_start=0.25), probe, saver], epochs=epochs, limit_val_batches=0,
                enable_checkpointing=True).fit(tiny_model(pkg), *loaders(n=80), ckpt_path=ckpt_path)
        return probe.lrs

    whole = run(epochs=2)
    first_epoch = tmp_path / "epoch=0.ckpt"
    assert run(epochs=2, ckpt_path=first_epoch) == pytest.approx(whole[10:])  # the same second half of the cycle
    with pytest.raises(ValueError, match="spans 20 steps, this run 30"):
        run(epochs=3, ckpt_path=first_epoch)


def test_T3_lr_finder_writes_its_plot_and_applies_the_suggestion(pkg, tmp_path):
    finder = LearningRateFinderPlot(min_lr=1e-4, max_lr=1.0, num_training_steps=20, early_stop_threshold=None)
    probe = BatchLRs()
    logger = CSVLogger(tmp_path, name="run")
    run = quiet_trainer(tmp_path, [finder, probe], max_epochs=1, logger=logger)
    run.fit(tiny_model(pkg), *loaders(n=160))  # 20 batches: the finder runs within the first epoch
    folder = tmp_path / "run" / "version_0"
    with Image.open(folder / "lr_finder.png") as image:
        assert image.size == (640, 400)
        # the curve (blue) and the suggestion (red) were drawn
        colors = {color for _, color in image.convert("RGB").getcolors(maxcolors=100000)}
        assert (0, 0, 255) in colors and (255, 0, 0) in colors
    rows = list(csv.DictReader((folder / "lr_finder.csv").open()))
    assert len(rows) == 20 and float(rows[0]["lr"]) < float(rows[-1]["lr"])
    # the matplotlib figure behind the PNG: log-x loss curve, titled and labelled, the suggestion marked
    figure = lr_curve_figure([float(r["lr"]) for r in rows], [float(r["loss"]) for r in rows], finder.suggestion)
    (ax,) = figure.axes
    assert ax.get_xscale() == "log" and "learning rate" in ax.get_title() and "learning rate" in ax.get_xlabel()
    assert "loss" in ax.get_ylabel()
    assert any(list(line.get_xdata()) == [finder.suggestion] * 2 for line in ax.get_lines())  # the vertical line
    assert any(t.get_text().startswith("suggested LR") for t in ax.get_legend().get_texts())
    print(f"LR finder: suggestion {finder.suggestion:.4g} from {len(rows)} points")
    assert finder.suggestion is not None and math.isfinite(finder.suggestion)
    assert probe.lrs[0] == pytest.approx(finder.suggestion)  # training started at the suggested LR
    metrics = (folder / "metrics.csv").read_text()
    assert "lr_finder/suggested_lr" in metrics


def test_T3_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="warmup_fraction=1.5"):
        WarmupCosineSchedule(warmup_fraction=1.5)
    with pytest.raises(ValueError, match="pct_start=0"):
        OneCycleSchedule(pct_start=0)
    with pytest.raises(ValueError, match="min_lr=1.0, max_lr=0.1"):
        LearningRateFinderPlot(min_lr=1.0, max_lr=0.1)
