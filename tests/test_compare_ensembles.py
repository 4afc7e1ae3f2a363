"""`compare` measures what a run trained: the ensemble it kept (E3 snapshots, E3 top-k checkpoints), the
average it trained towards (E4 EMA, SWA), next to its best checkpoint alone.

One run of the comparison (`python -m <package>.compare.child`) per recipe on digits with a tiny net; its
result is checked against an independent evaluation of the checkpoint files it names: each member rebuilt
from its file, probabilities averaged by hand, accuracy, NLL and ECE computed here.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_compare import baseline_args

from conftest import offline_env, run

METRICS = ("test_acc", "test_nll", "test_ece")


def evaluate(pkg, files: list[Path], data, state: str = "state_dict") -> dict[str, float]:
    """Accuracy, NLL and ECE (15 equal-width bins) of the members' averaged probabilities on the test split."""
    checkpoints = importlib.import_module(f"{pkg.__name__}.ensemble.checkpoints")
    members = []
    for path in files:
        checkpoint = checkpoints.load_checkpoint(path)
        members.append(checkpoints.build_member(path, {**checkpoint, "state_dict": checkpoint[state]}))
    probs, targets = [], []
    with torch.no_grad():
        for batch in data.test_dataloader():
            probs.append(torch.stack([member(batch[0]).softmax(-1) for member in members]).mean(0))
            targets.append(batch[-1])
    p, y = torch.cat(probs).double(), torch.cat(targets)
    confidence, predicted = p.max(-1)
    correct = (predicted == y).double()
    bins = (confidence * 15).floor().long().clamp(max=14)
    ece = sum((correct[bins == b].mean() - confidence[bins == b].mean()).abs() * (bins == b).double().mean()
              for b in range(15) if (bins == b).any())
    return {"test_acc": float(correct.mean()), "test_nll": float(-p.gather(1, y[:, None]).log().mean()), "test_ece": float(ece)}


def assert_close(measured: dict, expected: dict, prefix: str = "") -> None:
    for key in METRICS:
        assert measured[prefix + key] == pytest.approx(expected[key], abs=1e-5), (prefix + key, measured, expected)


def snapshot_recipe(project: Path, folder: Path) -> Path:
    """The snapshot recipe, its ensemble the last 2 of its 3 snapshots (which 'last K' picks shows)."""
    recipe = yaml.safe_load((project / "recipes/ensemble/snapshot.yaml").read_text())
    recipe["trainer"]["callbacks+"][0]["init_args"]["ensemble_size"] = 2
    path = folder / "snapshot-last-2.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("recipe", ["snapshot", "checkpoints", "ema", "swa"])
def test_compare_run_measures_the_kept_ensemble_or_the_averaged_weights_next_to_the_best_checkpoint(
        pkg, project, home, tmp_path, recipe):
    config = snapshot_recipe(project, tmp_path) if recipe == "snapshot" else project / f"recipes/ensemble/{recipe}.yaml"
    result_path = tmp_path / "result.json"
    # One CPU thread, as compare gives each of its jobs its share: two threads on two busy cores run slower.
    env = {**offline_env(home, project), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run([sys.executable, "-m", f"{pkg.__name__}.compare.child", f"--result={result_path}", "--name=run", "--group=g",
         f"--root_dir={tmp_path / 'work'}", "--", *baseline_args(project, tmp_path / "logs"), "--trainer.max_epochs=4",
         "--config", str(config)], cwd=tmp_path, env=env)
    result = json.loads(result_path.read_text())
    folder = Path(result["run_folder"])
    data = importlib.import_module(f"{pkg.__name__}.ensemble").build_datamodule(folder / "config.yaml", [], 8)
    data.setup("test")
    best = Path(result["checkpoint"])
    assert best == folder / "checkpoints" / "best.ckpt"
    single = evaluate(pkg, [best], data)
    assert_close(result, single, prefix="single_")  # the best checkpoint alone, in every case

    if recipe == "snapshot":  # cycles 3 and 2 of 3 (cycle 1 is left out)
        files = sorted((folder / "checkpoints" / "snapshots").glob("*.ckpt"))
        assert [f.name for f in files] == ["snapshot-1.ckpt", "snapshot-2.ckpt", "snapshot-3.ckpt"]
        assert result["evaluated"] == "snapshot ensemble of 2"
        assert_close(result, evaluate(pkg, files[1:], data))
    elif recipe == "checkpoints":  # the 3 of 4 epochs with the lowest val/loss: what the recipe's folder kept
        files = sorted((folder / "checkpoints" / "top").glob("*.ckpt"))
        assert len(files) == 3 and result["evaluated"] == "top-3 checkpoint ensemble"
        assert_close(result, evaluate(pkg, files, data))
    elif recipe == "ema":  # the best checkpoint's weights are the average; the raw ones it also holds score otherwise
        assert result["evaluated"] == "best checkpoint (EMA weights)"
        assert_close(result, single)
        raw = evaluate(pkg, [best], data, state="current_model_state")
        assert any(abs(raw[key] - single[key]) > 1e-4 for key in METRICS), (raw, single)
    else:  # the average SWA ends with (its BatchNorm statistics recomputed), also what last.ckpt holds
        assert result["evaluated"] == "SWA average (the final weights)"
        assert_close(result, evaluate(pkg, [folder / "checkpoints" / "last.ckpt"], data))


def test_report_names_what_each_arm_evaluated_with_the_best_checkpoint_alone_beside_an_ensemble(pkg, tmp_path):
    runs = importlib.import_module(f"{pkg.__name__}.compare.runs")
    report = importlib.import_module(f"{pkg.__name__}.compare.report")
    comparison = runs.Comparison((runs.Arm("baseline"), runs.Arm("snap", ("recipes/ensemble/snapshot.yaml",))), "seed",
                                 (0, 1), (), tmp_path)
    single = {"single_test_acc": 0.9, "single_test_nll": 0.3, "single_test_ece": 0.05}
    results = {
        runs.Run("baseline", 0, "seed"): {"test_acc": 0.9, "test_nll": 0.3, "test_ece": 0.05, "evaluated": "best checkpoint", **single},
        runs.Run("baseline", 1, "seed"): {"test_acc": 0.9, "test_nll": 0.3, "test_ece": 0.05},  # a result from before "evaluated"
        runs.Run("snap", 0, "seed"): {"test_acc": 0.95, "test_nll": 0.2, "test_ece": 0.02, "evaluated": "snapshot ensemble of 3", **single},
        runs.Run("snap", 1, "seed"): {"test_acc": 0.93, "test_nll": 0.2, "test_ece": 0.02, "evaluated": "snapshot ensemble of 3",
                                      **single, "single_test_acc": 0.8},
    }
    assert report.evaluated_lines(comparison, results).splitlines() == [
        "- `baseline`: best checkpoint",
        "- `snap`: snapshot ensemble of 3 (the best checkpoint alone: test_acc 0.8500, test_nll 0.3000, test_ece 0.0500)",
    ]
