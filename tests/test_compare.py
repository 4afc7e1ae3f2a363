"""`compare` — which recipe helps your data, with confidence intervals.

The statistics against hand-computed values; bad command lines refused before anything trains; and the
command end to end on digits with a tiny net: a recipe that cannot change the outcome (T1 size check)
shows no detectable difference, one that cripples training (I1 zero init) is worse on accuracy; a
comparison interrupted with Ctrl-C continues where it stopped and ends with the table a fresh training of
the same runs gives; `--folds 3` trains each arm on folds 0, 1, 2 with one seed and groups the W&B runs.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import offline_env, run


@pytest.fixture(scope="module")
def compare(pkg):
    return importlib.import_module(f"{pkg.__name__}.compare")


@pytest.fixture(scope="module")
def stats(pkg):
    return importlib.import_module(f"{pkg.__name__}.compare.stats")


# --------------------------------------------------------------------------------------------------
# Statistics


def test_t_quantiles_match_the_printed_table(stats):
    # Student-t table, two-sided 95 % (and one-sided 80 %, the power term).
    for df, expected in [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042), (1000, 1.962)]:
        assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)
    assert stats.t_quantile(0.8, 4) == pytest.approx(0.941, abs=1e-3)
    assert stats.t_quantile(0.025, 4) == pytest.approx(-2.776, abs=1e-3)
    assert stats.t_cdf(0.0, 3) == 0.5 and stats.t_cdf(-1.0, 1) == pytest.approx(0.25)  # Cauchy: 1/2 + atan(t)/pi


def test_mean_interval_and_paired_difference_by_hand(stats):
    # 1..5: mean 3, sd sqrt(2.5), half-width 2.776 * sqrt(2.5) / sqrt(5) = 1.963
    interval = stats.mean_interval([1, 2, 3, 4, 5])
    assert interval.mean == 3 and interval.sd == pytest.approx(math.sqrt(2.5))
    assert (interval.low, interval.high) == pytest.approx((3 - 1.9632, 3 + 1.9632), abs=1e-4)
    # Paired: the spread between seeds (0.70..0.90) cancels; the differences 0.02, 0.03, 0.01 remain.
    arm, baseline = [0.72, 0.93, 0.81], [0.70, 0.90, 0.80]
    difference = stats.paired_difference(arm, baseline)
    assert difference.mean == pytest.approx(0.02) and difference.sd == pytest.approx(0.01)
    assert (difference.low, difference.high) == pytest.approx((0.02 - 4.3027 * 0.01 / math.sqrt(3), 0.02 + 4.3027 * 0.01 / math.sqrt(3)), abs=1e-6)
    assert stats.verdict(difference, higher_is_better=True) == "no detectable difference"  # [-0.0048, 0.0448]
    assert not stats.mean_interval(arm).low > stats.mean_interval(baseline).high  # unpaired, the arm looks no better either
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_interval([0.9])


def test_verdicts_follow_the_direction_of_each_metric(stats):
    up = stats.mean_interval([0.1, 0.2])
    assert up.low < 0 < up.high and stats.verdict(up, True) == "no detectable difference"
    clearly_up = stats.paired_difference([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])
    assert stats.verdict(clearly_up, higher_is_better=True) == "better"  # accuracy up
    assert stats.verdict(clearly_up, higher_is_better=False) == "worse"  # NLL, ECE or time up


def test_identical_runs_give_a_zero_width_interval_and_no_detectable_difference(stats):
    same = stats.paired_difference([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert (same.mean, same.low, same.high, same.sd) == (0, 0, 0, 0)
    assert same.contains(0.0) and stats.verdict(same, True) == "no detectable difference"
    assert stats.seeds_needed(0.0, 0.0) is None  # nothing to detect: reported as —
    shifted = stats.paired_difference([0.91, 0.81, 0.71], [0.9, 0.8, 0.7])  # the same +0.01 on every seed
    assert shifted.sd == pytest.approx(0, abs=1e-12) and stats.verdict(shifted, True) == "better"


def test_seeds_needed_falls_with_the_effect_size(stats):
    needed = [stats.seeds_needed(effect, 1.0) for effect in (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)]
    assert needed == sorted(needed, reverse=True) and len(set(needed)) == len(needed)
    assert stats.seeds_needed(0.5, 1.0) == 34  # Cohen's d = 0.5: the textbook 34 pairs (normal approximation: 32)
    assert stats.seeds_needed(-0.5, 1.0) == 34  # the sign does not matter
    assert stats.seeds_needed(0.3, 0.0) == 2  # no spread: the least a t-test takes
    n = stats.seeds_needed(1.0, 1.0)  # n is the fixed point of the formula with t quantiles of n - 1 df
    assert n >= (stats.t_quantile(0.975, n - 1) + stats.t_quantile(0.8, n - 1)) ** 2
    assert n - 1 < (stats.t_quantile(0.975, n - 2) + stats.t_quantile(0.8, n - 2)) ** 2


# --------------------------------------------------------------------------------------------------
# Bad command lines: one message, nothing trained or written


@pytest.mark.parametrize(("arguments", "message"), [
    (["--arm", "ema=recipes/ensemble/nope.yaml", "--seeds", "0", "1"], "recipes/ensemble/nope.yaml does not exist"),
    (["--arm", "ema=recipes/ensemble/ema.yaml", "--seeds", "0"], "at least 2 runs per arm"),
    (["--arm", "ema=recipes/ensemble/ema.yaml", "--seeds", "1", "1"], "2 or more different seeds"),
    (["--arm", "ema=recipes/ensemble/ema.yaml"], "give --seeds"),
    (["--arm", "ema=recipes/ensemble/ema.yaml", "--seeds", "0", "1", "--folds", "3"], "not both"),
    (["--arm", "ema=recipes/ensemble/ema.yaml", "--arm", "ema=recipes/ensemble/swa.yaml", "--seeds", "0", "1"], "two arms have this name"),
    (["--arm", "baseline=recipes/ensemble/ema.yaml", "--seeds", "0", "1"], "'baseline' is the arm of the arguments after --"),
    (["--arm", "ema", "--seeds", "0", "1"], "write NAME=recipes"),
    (["--arm", "split=split.yaml", "--seeds", "0", "1"], "sets data.test_fraction, which changes the data split or the test set"),
    (["--arm", "i=recipes/init/he.yaml,recipes/init/zero.yaml", "--seeds", "0", "1"], "cannot be combined"),
    (["--arm", "ema=recipes/ensemble/ema.yaml", "--seeds", "0", "1", "--jobs", "0"], "--jobs 0"),
])
def test_bad_input_is_refused_with_one_message_before_anything_runs(compare, project, tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(project)
    (tmp_path / "split.yaml").write_text("data:\n  augment: []\n  test_fraction: 0.3\n")
    monkeypatch.setattr(Path, "cwd", classmethod(lambda cls: tmp_path))  # the default --root's parent
    arguments = [a.replace("split.yaml", str(tmp_path / "split.yaml")) for a in arguments]
    with pytest.raises(SystemExit) as refused:
        compare.main([*arguments, "--root", str(tmp_path / "out"), "--", "--config", "configs/default.yaml"])
    assert message in str(refused.value.code) + capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_compare_is_a_project_command_with_its_own_help(pkg, capsys):
    cli = importlib.import_module(f"{pkg.__name__}.cli")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--help"])
    shown = capsys.readouterr().out
    assert exit_info.value.code == 0 and all(option in shown for option in ("--arm", "--seeds", "--folds", "--jobs"))


def test_baseline_arguments_that_compare_owns_are_refused(compare, project, monkeypatch):
    monkeypatch.chdir(project)
    for baseline, option in ((["--seed_everything=3"], "--seed_everything"), (["--data.fold", "1"], "--data.fold")):
        with pytest.raises(SystemExit, match=f"drop {option}"):
            compare.build_comparison(["--folds", "3", "--", "--config", "configs/default.yaml", *baseline])
    with pytest.raises(SystemExit, match="after --"):
        compare.build_comparison(["--seeds", "0", "1"])
    for switched_off in (["--trainer.logger=false"], ["--trainer.logger", "null"]):
        with pytest.raises(SystemExit, match="drop --trainer.logger=.*recipes/logger/csv.yaml"):
            compare.build_comparison(["--seeds", "0", "1", "--", "--config", "configs/default.yaml", *switched_off])
    with pytest.raises(SystemExit, match="configs/missing.yaml does not exist"):
        compare.build_comparison(["--seeds", "0", "1", "--", "--config", "configs/missing.yaml"])


def test_same_command_same_folder_and_every_arm_gets_the_same_seeds(compare, project, monkeypatch):
    monkeypatch.chdir(project)
    argv = ["--arm", "ema=recipes/ensemble/ema.yaml", "--seeds", "0", "1", "--", "--config", "configs/default.yaml"]
    first, jobs = compare.build_comparison(argv)
    assert compare.build_comparison([*argv[:-3], "--jobs", "4", *argv[-3:]])[0].folder == first.folder  # --jobs: same runs
    assert compare.build_comparison([*argv, "--trainer.max_epochs=3"])[0].folder != first.folder
    assert first.folder.name.startswith("compare-") and jobs == 1
    ema_seed1 = next(r for r in first.runs() if r.name == "ema-seed1")
    assert first.fit_args(ema_seed1) == ["--config", "configs/default.yaml", "--config=recipes/ensemble/ema.yaml", "--seed_everything=1"]


# --------------------------------------------------------------------------------------------------
# End to end on digits: a tiny sized convnet, 3 epochs, 8x8 images


def baseline_args(project: Path, logs: Path, csv_logger: bool = True) -> list[str]:
    return ["--config", str(project / "configs/default.yaml"),
            *(["--config", str(project / "recipes/logger/csv.yaml")] if csv_logger else []),
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.max_epochs=3", "--data.image_size=8",
            "--model.backbone_options={widths: [8, 16], convs_per_stage: 1}", "--data.num_workers=0",
            "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def default_ctrl_c() -> None:
    """Ctrl-C's default action in the command, as in a terminal: a suite run in the background (`cmd &` in a
    script) inherits SIGINT ignored, which exec keeps and Python then leaves alone (no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_size_check_makes_no_difference_zero_init_is_worse_and_an_interrupted_comparison_resumes(pkg, project, home, tmp_path):
    root, env = tmp_path / "compare", offline_env(home, project)
    command = [sys.executable, "-m", pkg.__name__, "compare", "--arm", f"size={project / 'recipes/train/size-check.yaml'}",
               "--arm", f"zero={project / 'recipes/init/zero.yaml'}", "--seeds", "0", "1", "--jobs", "2", "--root", str(root),
               "--", *baseline_args(project, tmp_path / "logs")]
    # Ctrl-C as a terminal sends it (to the whole process group) once the first run has finished.
    with open(tmp_path / "interrupted.out", "w") as output:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=default_ctrl_c)
        deadline = time.monotonic() + 600
        while not list(root.glob("compare-*/runs/*.json")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGINT)
        first.wait(120)
    interrupted = (tmp_path / "interrupted.out").read_text()
    assert first.returncode != 0 and "Run the same command again to continue" in interrupted, interrupted[-3000:]
    (folder,) = root.glob("compare-*")
    kept = sorted(p.stem for p in (folder / "runs").glob("*.json"))
    assert 1 <= len(kept) < 6 and not (folder / "report.md").exists()

    out = run(command, cwd=tmp_path, env=env).stdout
    assert f"{len(kept)} finished earlier, {6 - len(kept)} to go" in out
    assert out.strip().splitlines()[-1] == f"compare report: {folder / 'report.md'}"
    rows = {(r["arm"], r["metric"]): r for r in read_csv(folder / "results.csv")}
    assert list(read_csv(folder / "results.csv")[0]) == ["arm", "metric", "mean", "ci_low", "ci_high", "diff", "diff_ci_low",
                                                          "diff_ci_high", "verdict"]
    assert len(rows) == 3 * 4 and rows["baseline", "test_acc"]["diff"] == ""
    size, zero = rows["size", "test_acc"], rows["zero", "test_acc"]
    assert size["verdict"] == "no detectable difference" and float(size["diff_ci_low"]) <= 0 <= float(size["diff_ci_high"])
    assert zero["verdict"] == "worse" and float(zero["diff_ci_high"]) < 0, zero
    assert rows["zero", "test_nll"]["verdict"] == "worse"
    assert (folder / "compare.png").stat().st_size > 10_000 and "| zero | test_acc |" in (folder / "report.md").read_text()
    assert sorted(p.stem for p in (folder / "logs").glob("*.log")) == sorted(
        f"{arm}-seed{s}" for arm in ("baseline", "size", "zero") for s in (0, 1))

    # The runs finished before Ctrl-C, trained again from scratch, give the same table: the resumed
    # comparison is the one an uninterrupted command would have printed (training time aside).
    for name in kept:
        (folder / "runs" / f"{name}.json").unlink()
    again = run(command, cwd=tmp_path, env=env).stdout
    assert f"{6 - len(kept)} finished earlier, {len(kept)} to go" in again
    fresh = {(r["arm"], r["metric"]): r for r in read_csv(folder / "results.csv")}
    assert {k: v for k, v in fresh.items() if k[1] != "train_seconds"} == {k: v for k, v in rows.items() if k[1] != "train_seconds"}


def test_folds_train_every_arm_on_each_fold_with_one_seed_in_one_wandb_group(pkg, project, home, tmp_path):
    root = tmp_path / "compare"
    command = [sys.executable, "-m", pkg.__name__, "compare", "--folds", "3", "--jobs", "3", "--root", str(root), "--",
               *baseline_args(project, tmp_path / "wandb", csv_logger=False),  # the project's W&B logger, offline
               "--config", str(project / "recipes/diagnose/lr-curve.yaml")]
    out = run(command, cwd=tmp_path, env=offline_env(home, project)).stdout
    (folder,) = root.glob("compare-*")
    results = {p.stem: json.loads(p.read_text()) for p in (folder / "runs").glob("*.json")}
    assert sorted(results) == ["baseline-fold0", "baseline-fold1", "baseline-fold2"]
    assert [(r["num_folds"], r["fold"], r["seed_everything"]) for _, r in sorted(results.items())] == [(3, 0, 0), (3, 1, 0), (3, 2, 0)]
    assert "3 folds" in out and out.strip().splitlines()[-1].startswith("compare report: ")
    # Each result carries what the run's diagnostics concluded (here the LR-curve diagnosis, D1).
    assert all(any(line.startswith("[D1] ") for line in r["findings"]) for r in results.values()), results

    # Every run and the summary are in the comparison's W&B group; the summary holds the table.
    loggers, groups, logged = importlib.import_module(f"{pkg.__name__}.loggers"), {}, set()
    for path in (tmp_path / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"):
        for record in loggers.read_offline_run(path):
            if record.WhichOneof("record_type") == "run":
                groups[record.run.display_name] = record.run.run_group
            elif record.WhichOneof("record_type") == "history":
                logged |= {item.key or item.nested_key[0] for item in record.history.item}
    assert groups == {name: folder.name for name in [*results, folder.name]}
    assert {"compare/results", "compare/figure"} <= logged  # the summary's table and figure

    # The folds themselves (the DataModule's): disjoint, covering train+val, the test split untouched.
    held_out, tests = [], set()
    for fold in range(3):
        data = pkg.ImageDataModule("digits", image_size=8, num_folds=3, fold=fold)
        data.setup("fit")
        held_out.append(set(data.splits.val.indices))
        tests.add(len(data.splits.test))
        pool = len(data.splits.train) + len(data.splits.val)
    assert sum(map(len, held_out)) == pool and set.union(*held_out) == set(range(pool)) and len(tests) == 1
