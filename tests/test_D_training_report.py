"""D1–D4, F8 — the end-of-fit report: Markdown + PNGs in the run folder, the same in an offline W&B run;
nothing written under fast_dev_run; every problem names recipes to try and one `lightning compare` command
that compare's own parser accepts (none when healthy); and the overhead benchmark of all diagnostics
(printed, not asserted)."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import time

import pytest
from PIL import Image
from pytorch_lightning import Callback, Trainer, seed_everything
from pytorch_lightning.loggers import CSVLogger
from tiny import digits_convnet, quiet_trainer

from cnn_tricks.callbacks import ActivationHealth, FirstLayerFilters, LossCurveDiagnosis, TrainingReport, TrainValGap
from cnn_tricks.callbacks._diagnostics import TRY, Finding, compare_command, recipes_to_try
from cnn_tricks.callbacks.train_val_gap import diagnose_gap
from cnn_tricks.callbacks.training_report import render_report

from conftest import RECIPES


def diagnostics() -> list:
    return [LossCurveDiagnosis(), TrainValGap(), FirstLayerFilters(), ActivationHealth(every_n_steps=10), TrainingReport()]


def fit(pkg, callbacks, logger=False, epochs: int = 2, image_size: int = 8, widths=(8, 16), **trainer_args) -> Trainer:
    seed_everything(0, verbose=False)
    data = pkg.ImageDataModule("digits", image_size=image_size, batch_size=64)
    model = digits_convnet(pkg, widths, image_size=image_size, lr=0.1)
    trainer = quiet_trainer(callbacks=callbacks, max_epochs=epochs, logger=logger, **trainer_args)
    trainer.fit(model, data)
    return trainer


def test_D_report_file_with_plots_and_findings_in_the_run_folder(pkg, tmp_path):
    callbacks = diagnostics()
    fit(pkg, callbacks, logger=CSVLogger(tmp_path / "runs", name="digits"))
    report = callbacks[-1]
    assert report.path == tmp_path / "runs" / "digits" / "version_0" / "report" / "report.md"
    text = report.path.read_text()
    print(text)
    for image in ("loss_curve", "learning_rate", "accuracy_gap", "first_layer_filters", "filter_noise",
                  "activation_health", "gradient_norms", "epoch_losses", "epoch_accuracies"):
        assert f"![{image}]({image}.png)" in text
        with Image.open(report.path.parent / f"{image}.png") as png:
            png.verify()
    assert "## Findings" in text and "**D1** good LR" in text and "**D3**" in text and "**D4**" in text and "**F8**" in text
    assert {f.source for f in report.findings} >= {"D1", "D3", "D4", "F8"}
    assert (tmp_path / "runs" / "digits" / "version_0" / "filters" / "epoch_001.png").is_file()
    # whatever the findings, the printed command is the one for this run's problems and its saved config
    config = tmp_path / "runs" / "digits" / "version_0" / "config.yaml"
    assert report.command == compare_command([f for f in report.findings if not f.healthy], config)
    assert (f"Try: `{report.command}`" in text) if report.command else "Try:" not in text


def test_D_report_goes_to_an_offline_wandb_run(pkg, tmp_path, monkeypatch):
    import wandb

    read_offline_run = importlib.import_module(f"{pkg.__name__}.loggers").read_offline_run
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    callbacks = diagnostics()
    logger = WandbLogger(project="diag", save_dir=str(tmp_path), offline=True)
    fit(pkg, callbacks, logger=logger, epochs=1)
    files = logger.experiment.dir
    wandb.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = sorted(p.name for p in (run / "files" / "media" / "images").rglob("*.png"))
    print(media)
    assert any(name.startswith("first_layer_filters") for name in media)
    for image in ("loss_curve", "accuracy_gap", "activation_health"):
        assert any(name.startswith(image) for name in media), image
    summary: dict = {}
    for _ in range(40):  # wandb-core may still be flushing the offline file when finish() returns
        for record in read_offline_run(next(run.glob("run-*.wandb"))):
            if record.WhichOneof("record_type") == "summary":
                summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
        if "diagnose/findings" in summary:
            break
        time.sleep(0.5)
    assert "[D1]" in summary["diagnose/findings"] and "[D3]" in summary["diagnose/findings"]
    assert summary["diagnose/D1_verdict"].startswith("[D1]")
    assert str(run) in files
    # the report file itself is in the run folder of the W&B logger (save_dir/project/run id)
    assert callbacks[-1].path == tmp_path / "diag" / logger.version / "report" / "report.md"


def test_D_fast_dev_run_writes_nothing_but_runs_every_diagnostic(pkg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    callbacks = diagnostics()
    fit(pkg, callbacks, fast_dev_run=True, default_root_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert callbacks[-1].path is None and "## Findings" in callbacks[-1].markdown
    assert len(callbacks[2].grids) == 1 and len(callbacks[3].samples) == 1


def gap_section(train_acc: float, val_acc: float, backbone: str | None = None, backbone_options: dict | None = None):
    gap = TrainValGap()
    gap.diagnosis, gap.backbone, gap.backbone_options = diagnose_gap(train_acc, val_acc), backbone, backbone_options
    return gap.report_section()


def test_D_overfitting_names_recipes_and_a_compare_command_that_compare_accepts(pkg, project, tmp_path, monkeypatch):
    compare = importlib.import_module(f"{pkg.__name__}.compare")
    section = gap_section(1.0, 0.6)
    (finding,) = section.findings
    assert not finding.healthy and finding.recipes == TRY["overfitting"]
    assert finding.recipes[:4] == ("augment/pad-crop", "regularize/dropout", "augment/mixup", "regularize/max-norm")
    assert "augment/flip" not in finding.recipes  # a mirrored digit is another digit
    config = tmp_path / "runs" / "digits" / "version_0" / "config.yaml"  # where the project's CLI saves the run's config
    config.parent.mkdir(parents=True)
    config.write_text((project / "configs" / "default.yaml").read_text())
    text, _ = render_report([section], config=config)
    print(text)
    assert "recipes to try: `augment/pad-crop`, `regularize/dropout`" in text and "Nothing to fix" not in text
    command = re.search(r"^Try: `(.+)`$", text, re.MULTILINE).group(1)
    argv = shlex.split(command)
    assert argv[:2] == ["lightning", "compare"] and "compare" in importlib.import_module(f"{pkg.__name__}.cli").COMMANDS
    monkeypatch.chdir(project)  # recipe paths are relative to the project folder, as in `compare`
    comparison, jobs = compare.build_comparison(argv[2:])
    assert [(arm.name, arm.recipes) for arm in comparison.arms] == [
        ("baseline", ()), ("pad-crop", ("recipes/augment/pad-crop.yaml",)), ("dropout", ("recipes/regularize/dropout.yaml",)),
        ("mixup", ("recipes/augment/mixup.yaml",)), ("max-norm", ("recipes/regularize/max-norm.yaml",))]
    assert comparison.baseline_args == ("--config", str(config)) and comparison.units == (0, 1, 2) and jobs == 1


def test_D_healthy_report_prints_no_command(pkg, tmp_path):
    text, _ = render_report([gap_section(0.99, 0.97)], config=tmp_path / "config.yaml")
    assert "Nothing to fix: every diagnostic is healthy." in text
    assert "Try:" not in text and "compare" not in text and "recipes to try" not in text
    report = TrainingReport()
    fit(pkg, [report], logger=CSVLogger(tmp_path), epochs=1, limit_train_batches=2, limit_val_batches=1)
    assert report.command is None and "Try:" not in report.markdown


def test_D_arms_are_few_deduplicated_one_per_problem_first_and_fit_the_backbone():
    overfit = Finding("D3", "overfitting", "regularize", recipes=TRY["overfitting"])
    noisy_filters = Finding("D4", "noisy filters", "regularize", recipes=TRY["noisy_filters"])
    dead = Finding("F8", "dead ReLUs", "another activation", recipes=TRY["dead"])
    smooth = Finding("D4", "smooth", "nothing", healthy=True, recipes=("init/he",))
    assert recipes_to_try([overfit, noisy_filters, dead, smooth]) == [
        "augment/pad-crop", "regularize/max-norm", "activation/leaky-relu", "regularize/dropout"]
    assert compare_command([smooth], "c.yaml") is None
    same_name = Finding("X", "x", "y", recipes=("regularize/l2", "other/l2"))
    assert "--arm l2=recipes/regularize/l2.yaml --arm other-l2=recipes/other/l2.yaml" in compare_command([same_name], "c.yaml")
    assert "<run folder>/config.yaml" in compare_command([dead], None)  # fast_dev_run: no run folder
    # under-capacity: a wider sized convnet, named only where the recipe fits: the default sized convnet, not
    # another backbone, nor a run with options of its own (the recipe's backbone_options would replace them)
    (under,) = gap_section(0.4, 0.38).findings
    assert under.recipes == ("model/wider",) and gap_section(0.4, 0.38, backbone="sized_convnet").findings[0].recipes == ("model/wider",)
    assert gap_section(0.4, 0.38, backbone="resnet18").findings[0].recipes == ()
    assert gap_section(0.4, 0.38, "sized_convnet", {"widths": [8, 16]}).findings[0].recipes == ()
    assert "regularize/dropout" not in gap_section(1.0, 0.6, backbone="resnet18").findings[0].recipes
    with pytest.raises(ValueError, match="'dropout' is not a recipe name"):
        Finding("D3", "x", "y", recipes=("dropout",))


def test_D_every_recipe_a_diagnosis_names_exists():
    named = {recipe for recipes in TRY.values() for recipe in recipes}
    assert not [r for r in sorted(named) if not (RECIPES / f"{r}.yaml").is_file()]


def test_D_model_wider_doubles_the_sized_convnet_widths(pkg, cli_in_process):
    from torch import nn

    def widths(cli) -> list[int]:
        return list(dict.fromkeys(m.out_channels for m in cli.model.backbone.modules() if isinstance(m, nn.Conv2d)))

    base = widths(cli_in_process([], "--trainer.logger=false"))
    assert widths(cli_in_process(["model/wider"], "--trainer.logger=false")) == [2 * w for w in base] == [64, 128, 256]


def test_D_report_alone_plots_the_epoch_metrics(pkg, tmp_path):
    report = TrainingReport()
    fit(pkg, [report], logger=CSVLogger(tmp_path), epochs=1)
    text = report.path.read_text()
    assert "![epoch_accuracies](epoch_accuracies.png)" in text and "no diagnostic had enough data" in text
    with pytest.raises(ValueError, match="folder_name='../x'"):
        TrainingReport(folder_name="../x")


def test_D_plots_are_titled_labelled_with_round_ticks_and_the_legend_and_notes_inside_the_image():
    import math

    from cnn_tricks.utils.plots import draw_lines, figure, line_plot, to_image

    steps = list(range(37))
    series = {"train loss": (steps, [2.3 * 0.93**s for s in steps]),
              "a long series name that the legend has to wrap": (steps, [2.0 * 0.95**s if s != 5 else math.nan for s in steps])}
    notes = ["[D1] good LR: fast decrease that bends and keeps improving -> keep it " * 3]
    fig, axes = figure((720, 460))
    ax = axes[0, 0]
    draw_lines(ax, series, "D1/D2 training loss per step", "step", "loss", notes=notes)
    image = to_image(fig)
    assert image.size == (720, 460) and image.mode == "RGB"
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("D1/D2 training loss per step", "step", "loss")
    box = fig.bbox
    for artist in (ax.get_legend(), ax.texts[0], ax.title, ax.xaxis.label, ax.yaxis.label):  # nothing cut off
        extent = artist.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, artist
    assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "train loss"
    for ticks in (ax.get_xticks(), ax.get_yticks()):  # round values: a step of 1, 2, 2.5 or 5 x 10^k
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5)), ticks
    assert all(float(x).is_integer() for x in ax.get_xticks())  # integer steps get integer ticks
    png = line_plot(series, "losses per epoch", "epoch", "loss", notes=notes, log_y=True)
    assert png.width == 720 and png.height > 420  # the notes add lines under the axes
    fig, axes = figure()
    draw_lines(axes[0, 0], {"dead units": ([0, 50, 100], [0.0, 0.0, 0.0])}, "F8 dead fraction", "step", "fraction")
    assert axes[0, 0].get_ylim() == (0.0, 1.0)  # a healthy flat zero: the axis starts at 0, no negative fractions


class EpochClock(Callback):
    """Time from one epoch's start to the next (so every callback's epoch-end work is inside), and the fit end."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())

    def epoch(self) -> float:
        durations = sorted(b - a for a, b in zip(self.marks, self.marks[1:], strict=False))
        return durations[len(durations) // 2]


def test_D_overhead_benchmark_all_diagnostics(pkg, tmp_path):
    """Median epoch time with every diagnostic on (the recipes' defaults) vs off, on a sized convnet and
    16x16 digits; printed, not asserted (acceptance: at most 15% more per epoch). Alternated, best of 2, as
    the shared CPUs make single timings noisy. The report's one-off cost at fit end is printed apart."""
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(2):
        clock = EpochClock()
        fit(pkg, [clock], logger=CSVLogger(tmp_path), epochs=4, image_size=16, widths=(16, 32), limit_val_batches=1)
        times["off"].append(clock.epoch())
        clock, report = EpochClock(), TrainingReport()
        everything = [clock, LossCurveDiagnosis(), TrainValGap(), FirstLayerFilters(), ActivationHealth(), report]
        start = time.perf_counter()
        fit(pkg, everything, logger=CSVLogger(tmp_path), epochs=4, image_size=16, widths=(16, 32), limit_val_batches=1)
        times["on"].append(clock.epoch())
        report_seconds = time.perf_counter() - start - (clock.marks[-1] - clock.marks[0])
    ratio = min(times["on"]) / min(times["off"])
    print(f"all diagnostics, median epoch on/off: {min(times['on']):.3f}s / {min(times['off']):.3f}s = {ratio:.3f}; "
          f"setup + report at fit end: {report_seconds:.2f}s once")
    assert report.path is not None and len(everything[3].files) == 4
