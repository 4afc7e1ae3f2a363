"""E2 — top models of a search: k-fold splits in the DataModule, the W&B sweep config, and the command
that ranks local runs by their checkpointed validation score and ensembles the top k."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from tiny import quiet_trainer


def test_E2_folds_partition_the_train_val_pool_and_leave_test_alone(pkg):
    plain = pkg.ImageDataModule("digits", image_size=8)
    plain.setup()
    pool = len(plain.splits.train) + len(plain.splits.val)
    vals, trains = [], []
    for fold in range(5):
        dm = pkg.ImageDataModule("digits", image_size=8, num_folds=5, fold=fold)
        dm.setup()
        assert dm.splits.test.indices == plain.splits.test.indices  # the test split is untouched
        vals.append(set(dm.splits.val.indices))
        trains.append(set(dm.splits.train.indices))
        assert not vals[-1] & trains[-1] and len(vals[-1] | trains[-1]) == pool
        assert abs(len(vals[-1]) - pool / 5) < 1
    assert set().union(*vals) == set(range(pool)) and sum(map(len, vals)) == pool  # each sample validates once
    again = pkg.ImageDataModule("digits", image_size=8, num_folds=5, fold=2)
    again.setup()
    assert set(again.splits.val.indices) == vals[2]  # reproducible (split_seed)


def test_E2_fold_out_of_range_is_a_clear_error(pkg):
    with pytest.raises(ValueError, match=r"data.fold=5 is out of range for data.num_folds=5: use a fold index from 0 to 4"):
        pkg.ImageDataModule("digits", num_folds=5, fold=5)
    with pytest.raises(ValueError, match="data.num_folds=0"):
        pkg.ImageDataModule("digits", num_folds=0)


def fit_run(pkg, folder, lr: float, fold: int):
    """One run of a search, laid out like the CLI's: <folder>/checkpoints/best.ckpt (ModelCheckpoint on val/acc)."""
    torch.manual_seed(0)
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=16, backbone_options={"widths": [4, 8]},
                                optimizer=lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9))
    data = pkg.ImageDataModule("digits", image_size=16, batch_size=32, num_folds=4, fold=fold)
    best = ModelCheckpoint(dirpath=folder / "checkpoints", filename="best", monitor="val/acc", mode="max")
    trainer = quiet_trainer(callbacks=[best], max_epochs=1, limit_train_batches=5, limit_val_batches=2,
                            num_sanity_val_steps=0, enable_checkpointing=True)
    trainer.fit(model, datamodule=data)
    return float(best.best_model_score)


def test_E2_top_k_runs_by_checkpointed_val_score_are_ensembled(pkg, tmp_path, capsys):
    ensemble = importlib.import_module(f"{pkg.__name__}.ensemble")
    root = tmp_path / "runs"
    scores = {f"run{i}": fit_run(pkg, root / "search" / f"run{i}", lr, fold=i)
              for i, lr in enumerate([0.001, 0.05, 0.2])}
    assert len(set(scores.values())) > 1
    expected = sorted(scores, key=scores.get, reverse=True)[:2]
    ranked = ensemble.top_k_checkpoints(root, k=2, metric="val/acc")
    assert [p.parent.parent.name for p, _ in ranked] == expected
    assert [s for _, s in ranked] == pytest.approx([scores[name] for name in expected])
    worst = ensemble.top_k_checkpoints(root, k=1, metric="val/acc", mode="min")
    assert worst[0][0].parent.parent.name == min(scores, key=scores.get)

    metrics = ensemble.main(["topk", "--root", str(root), "--k", "2", "--accelerator", "cpu",
                             "--data", "dataset=digits", "--data", "batch_size=128"])
    out = capsys.readouterr().out
    assert "Ensemble of 2 (probs)" in out and all(name in out for name in expected)
    assert {"test/acc", "test/member0_acc", "test/member1_acc"} <= set(metrics)
    with pytest.raises(SystemExit, match="monitored val/loss"):
        ensemble.top_k_checkpoints(root, k=2, metric="val/loss")


def test_E2_sweep_config_names_real_cli_options(pkg, project):
    sweep = yaml.safe_load((project / "configs" / "sweep.yaml").read_text())
    assert sweep["metric"] == {"name": "val/acc", "goal": "maximize"} and sweep["program"] == pkg.__name__
    assert sweep["command"][4:9] == ["fit", "--config", "configs/default.yaml", "--config", "recipes/logger/wandb.yaml"]
    assert (project / "recipes" / "logger" / "wandb.yaml").is_file()
    assert {"data.fold", "data.num_folds", "model.optimizer.init_args.lr"} <= set(sweep["parameters"])
    # Hyperband early termination, in the form W&B's sweep schema takes (min_iter counts logged epochs).
    assert sweep["early_terminate"] == {"type": "hyperband", "min_iter": 3, "eta": 3}
    # Every swept option is an argument of the class the CLI builds for it, and every value is accepted.
    default = yaml.safe_load((project / "configs" / "default.yaml").read_text())
    optimizer = getattr(torch.optim, default["model"]["optimizer"]["class_path"].rsplit(".", 1)[1])
    owners = {"data": pkg.ImageDataModule, "model": pkg.ImageClassifier, "model.optimizer.init_args": optimizer}
    for name in sweep["parameters"]:
        owner, _, arg = name.rpartition(".")
        assert arg in inspect.signature(owners[owner]).parameters, name
    folds = sweep["parameters"]["data.fold"]["values"]
    assert folds == list(range(sweep["parameters"]["data.num_folds"]["value"]))
    for fold in folds:
        pkg.ImageDataModule("digits", num_folds=len(folds), fold=fold)
