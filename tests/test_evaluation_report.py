"""Evaluation beyond accuracy at `lightning test` (callbacks/test_report.py::EvaluationReport): per-class
precision/recall/F1, top-k, ECE and the confusion matrix equal hand-computed values on predictions we
control; through the CLI on digits the run folder gets the CSVs and PNGs and the offline W&B run the numbers."""

from __future__ import annotations

import csv
import importlib
import json
import math
import sys
import time

import pytest
import torch
from PIL import Image
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.loggers import CSVLogger
from tiny import quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

from cnn_tricks.callbacks import EvaluationReport
from cnn_tricks.callbacks.test_report import reliability_bins, undo_preprocessing

from conftest import offline_env, run

NAMES = ["cat", "dog", "bird"]
# (true class, probabilities): 7 test images whose predictions we fix.
SAMPLES = [
    (0, [0.72, 0.18, 0.10]),  # right, 0.72
    (0, [0.20, 0.70, 0.10]),  # wrong (dog), 0.70: same ECE bin as 0.72
    (1, [0.10, 0.82, 0.08]),  # right, 0.82
    (1, [0.62, 0.30, 0.08]),  # wrong (cat), 0.62
    (2, [0.05, 0.11, 0.84]),  # right, 0.84: same bin as 0.82
    (2, [0.52, 0.30, 0.18]),  # wrong (cat), 0.52; bird not even in the top 2
    (2, [0.02, 0.03, 0.95]),  # right, 0.95
]
# By hand. Rows true, columns predicted:
CONFUSION = [[1, 1, 0], [1, 1, 0], [1, 0, 2]]
RECALL = {"cat": 1 / 2, "dog": 1 / 2, "bird": 2 / 3}
PRECISION = {"cat": 1 / 3, "dog": 1 / 2, "bird": 1.0}
F1 = {"cat": 0.4, "dog": 0.5, "bird": 0.8}
# 15 bins of width 1/15: {0.52} acc 0, {0.62} acc 0, {0.70, 0.72} acc 1/2, {0.82, 0.84} acc 1, {0.95} acc 1.
ECE = (0.52 + 0.62 + 2 * abs(0.5 - 0.71) + 2 * abs(1 - 0.83) + 0.05) / 7


class FixedLogits(LightningModule):
    """Its 'images' (N, 1, 1, classes) are its logits; `test_step` returns them (`logits`), their softmax
    (`probabilities`, as an ensemble's), or nothing (`none`: the callback runs the forward itself)."""

    def __init__(self, returns: str) -> None:
        super().__init__()
        self.returns = returns

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)

    def test_step(self, batch, batch_idx: int):
        images, targets = batch
        logits = self(images)
        if self.returns == "none":
            return None
        return {"logits": logits.softmax(-1) if self.returns == "probabilities" else logits, "targets": targets}


class NamedClasses(LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.classes = NAMES

    def test_dataloader(self) -> DataLoader:
        logits = torch.tensor([p for _, p in SAMPLES]).log().view(len(SAMPLES), 1, 1, len(NAMES))
        return DataLoader(TensorDataset(logits, torch.tensor([t for t, _ in SAMPLES])), batch_size=3)


@pytest.mark.parametrize("returns", ["logits", "probabilities", "none"])
def test_report_numbers_equal_the_hand_computed_ones(tmp_path, returns):
    report = EvaluationReport(mistakes=2, top_k=2)
    trainer = quiet_trainer(callbacks=[report], logger=CSVLogger(tmp_path, name="run"))
    (logged,) = trainer.test(FixedLogits(returns), datamodule=NamedClasses(), verbose=False)
    assert report.confusion.tolist() == CONFUSION
    for name in NAMES:
        assert logged[f"test/recall/{name}"] == pytest.approx(RECALL[name], abs=1e-6)
        assert logged[f"test/precision/{name}"] == pytest.approx(PRECISION[name], abs=1e-6)
        assert logged[f"test/f1/{name}"] == pytest.approx(F1[name], abs=1e-6)
    assert logged["test/macro_recall"] == pytest.approx(sum(RECALL.values()) / 3, abs=1e-6)
    assert logged["test/macro_f1"] == pytest.approx(sum(F1.values()) / 3, abs=1e-6)
    assert logged["test/ece"] == pytest.approx(ECE, abs=1e-6)
    assert logged["test/top2_acc"] == pytest.approx(6 / 7, abs=1e-6)
    # The two most confident mistakes, across batches, most confident first.
    assert [(t, p) for t, p, _ in report.shown_mistakes] == [("cat", "dog"), ("dog", "cat")]
    assert [c for _, _, c in report.shown_mistakes] == pytest.approx([0.70, 0.62], abs=1e-6)
    folder = tmp_path / "run" / "version_0"
    assert report.folder == folder
    with open(folder / "per_class.csv") as file:
        rows = list(csv.DictReader(file))
    assert [r["class"] for r in rows] == NAMES and [int(r["support"]) for r in rows] == [2, 2, 3]
    assert [float(r["recall"]) for r in rows] == pytest.approx(list(RECALL.values()), abs=1e-5)
    assert [float(r["precision"]) for r in rows] == pytest.approx(list(PRECISION.values()), abs=1e-5)
    with open(folder / "confusion_matrix.csv") as file:
        table = list(csv.reader(file))
    assert table[0][1:] == NAMES and [[int(v) for v in row[1:]] for row in table[1:]] == CONFUSION
    for png in ("confusion_matrix", "reliability", "mistakes"):
        with Image.open(folder / f"{png}.png") as image:
            image.verify()


def test_reliability_bins_give_torchmetrics_ece_and_preprocessing_is_undone():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=generator) * 3
    targets = torch.randint(10, (500,), generator=generator)
    from torchmetrics.classification import MulticlassCalibrationError

    probabilities = logits.softmax(-1)
    expected = MulticlassCalibrationError(10, n_bins=15)(probabilities, targets)
    confidence, predicted = probabilities.max(-1)
    bins = reliability_bins(confidence, predicted == targets, 15)
    ece = (bins["count"] * (bins["accuracy"] - bins["confidence"]).abs()).sum() / bins["count"].sum()
    assert float(ece) == pytest.approx(float(expected), abs=1e-6)
    images = torch.rand(4, 3, 5, 5, generator=generator)
    shift, scale = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    standardized = (images - shift.view(-1, 1, 1)) / scale.view(-1, 1, 1)
    assert torch.allclose(undo_preprocessing(standardized, {"shift": shift, "scale": scale}), images, atol=1e-5)
    matrix = torch.linalg.qr(torch.randn(75, 75, generator=generator)).Q * 3  # an invertible 'whitening'
    pixel_mean = images.flatten(1).mean(0)
    whitened = ((images.flatten(1) - pixel_mean) @ matrix).view_as(images)
    assert torch.allclose(undo_preprocessing(whitened, {"pixel_mean": pixel_mean, "matrix": matrix}), images, atol=1e-4)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("mistakes", -1, "mistakes=-1"), ("bins", 0, "bins=0"), ("top_k", 1, "top_k=1"), ("bins", 2.5, "bins=2.5")])
def test_bad_options_fail_with_the_value_and_the_fix(option, value, message):
    with pytest.raises(ValueError, match=message):
        EvaluationReport(**{option: value})


def test_lightning_test_writes_the_report_and_sends_it_to_offline_wandb(pkg, project, home, tmp_path):
    """The user path: `lightning fit` a few steps, then `lightning test --ckpt_path best` with the default config."""
    env = offline_env(home, project)
    command = [sys.executable, "-m", pkg.__name__]
    common = ["--config", str(project / "configs" / "default.yaml"), "--trainer.accelerator=cpu",
              "--trainer.enable_progress_bar=false"]
    run([*command, "fit", *common, "--trainer.max_epochs=1", "--trainer.limit_train_batches=4",
         "--trainer.limit_val_batches=2"], cwd=tmp_path, env=env, timeout=300)
    result = run([*command, "test", *common, "--ckpt_path=best"], cwd=tmp_path, env=env, timeout=300)
    assert "Evaluation report:" in result.stdout + result.stderr
    (per_class,) = tmp_path.glob("runs/*/*/per_class.csv")  # the test run's folder (fit's has none)
    folder = per_class.parent
    with open(per_class) as file:
        rows = list(csv.DictReader(file))
    assert [r["class"] for r in rows] == [str(i) for i in range(10)]
    support = sum(int(r["support"]) for r in rows)
    with open(folder / "confusion_matrix.csv") as file:
        matrix = [[int(v) for v in row[1:]] for row in list(csv.reader(file))[1:]]
    assert sum(map(sum, matrix)) == support and [sum(row) for row in matrix] == [int(r["support"]) for r in rows]
    for png in ("confusion_matrix", "reliability", "mistakes"):
        with Image.open(folder / f"{png}.png") as image:
            image.verify()
    # The offline W&B run of the test: its summary has the per-class metrics and the ECE.
    read_offline_run = importlib.import_module(f"{pkg.__name__}.loggers").read_offline_run
    (run_file,) = tmp_path.glob(f"runs/wandb/offline-run-*-{folder.name}/run-*.wandb")
    summary: dict = {}
    for _ in range(20):  # wandb-core may still be flushing the file when the process has ended
        for record in read_offline_run(run_file):
            if record.WhichOneof("record_type") == "summary":
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
        if "test/ece" in summary:
            break
        time.sleep(0.5)
    for i, row in enumerate(rows):
        assert summary[f"test/recall/{i}"] == pytest.approx(float(row["recall"]), abs=1e-5)
    assert 0 <= summary["test/ece"] <= 1 and math.isfinite(summary["test/macro_f1"]) and "test/top5_acc" in summary
    # W&B's confusion-matrix chart: its table holds every cell of the matrix.
    (chart,) = run_file.parent.glob("files/media/table/test/confusion_matrix_chart_table_*.table.json")
    cells = json.loads(chart.read_text())
    assert cells["columns"] == ["Actual", "Predicted", "nPredictions"]
    assert {(a, p): n for a, p, n in cells["data"]} == {(str(t), str(p)): matrix[t][p] for t in range(10) for p in range(10)}
    media = {p.name.split("_")[0] for p in run_file.parent.glob("files/media/images/test/*.png")}
    assert media == {"confusion", "reliability", "mistakes"}
