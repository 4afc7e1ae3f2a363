"""Recipes for what Lightning already does well: early stopping, gradient clipping, the batch-size finder,
and several loggers at once. Each test builds the run from the generated project's config plus the recipe,
exactly as `lightning fit --config configs/default.yaml --config recipes/<group>/<name>.yaml` would, and
checks that the recipe acts (not only that it parses)."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import BatchSizeFinder, EarlyStopping
from pytorch_lightning.loggers import CSVLogger

# A small, fast run: 16-pixel digits, a narrow net, one batch per epoch.
SMALL = ["--data.image_size=16", "--data.num_workers=0", "--trainer.accelerator=cpu",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--model.backbone_options={widths: [8, 16], convs_per_stage: 1}"]
CSV = ["--trainer.logger=CSVLogger", "--trainer.logger.save_dir=runs"]  # a quick logger (the config's LR monitor needs one)


@pytest.fixture
def build(cli_in_process):
    """`build(recipe, *args)`: the CLI's model, data and trainer for `fit` with that recipe, small and W&B offline."""
    return lambda recipe, *args: cli_in_process([recipe], *SMALL, *args)


def test_early_stopping_stops_when_val_loss_stalls(build):
    # LR 1e-9: the weights (so val/loss) do not move, so the run stops after 1 + patience (5) epochs of 30.
    cli = build("train/early-stopping", "--trainer.max_epochs=30", "--trainer.limit_train_batches=1",
                "--trainer.limit_val_batches=1", "--model.optimizer.init_args.lr=1e-9", *CSV)
    (stopper,) = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert (stopper.monitor, stopper.patience) == ("val/loss", 5)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.current_epoch == 6 and stopper.stopped_epoch == 5


class GradNorm(Callback):
    """The global gradient norm after each optimizer step (what the step used)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("clip", [None, 0.01])
def test_gradient_clipping_bounds_the_global_norm(build, clip):
    cli = build("train/gradient-clipping", "--trainer.max_steps=3", "--trainer.limit_val_batches=0",
                *CSV, "--seed_everything=0",
                f"--trainer.gradient_clip_val={clip if clip is not None else 'null'}")
    assert cli.trainer.gradient_clip_algorithm == "norm"
    probe = GradNorm()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if clip is None:
        assert min(probe.norms) > 0.05  # unclipped, the gradients are larger than the bound tested below
    else:
        assert max(probe.norms) == pytest.approx(clip, rel=1e-3)


def test_batch_size_finder_doubles_the_datamodule_batch_size(build):
    cli = build("train/batch-size-finder", "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
                *CSV)
    (finder,) = [c for c in cli.trainer.callbacks if isinstance(c, BatchSizeFinder)]
    assert (finder._init_val, finder._batch_arg_name, cli.datamodule.batch_size) == (32, "batch_size", 64)
    finder._max_trials = 3  # trials at 32, 64, 128: nothing runs out of memory on a CPU, the trials end it
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.datamodule.batch_size == 128


def test_wandb_and_csv_loggers_both_receive_the_metrics(build, tmp_path):
    cli = build("logger/wandb-and-csv", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                "--trainer.limit_val_batches=1")
    wandb_logger, csv_logger = cli.trainer.loggers
    assert type(wandb_logger).__name__ == "AutoWandbLogger" and isinstance(csv_logger, CSVLogger)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (metrics,) = tmp_path.glob("runs/lightning_logs/version_*/metrics.csv")
    assert "val/acc" in metrics.read_text().splitlines()[0]
    assert list(tmp_path.glob("runs/wandb/offline-run-*/run-*.wandb"))
    assert list(tmp_path.glob("runs/*/*/checkpoints/best.ckpt"))  # the run folder follows the first logger
