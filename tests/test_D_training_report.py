"""D1–D4, F8 — the end-of-fit report: Markdown + PNGs in the run folder, the same in an offline W&B run;
nothing written under fast_dev_run; and the overhead benchmark of all diagnostics (printed, not asserted)."""

from __future__ import annotations

import importlib
import json
import time

import pytest
from PIL import Image
from pytorch_lightning import Callback, Trainer, seed_everything
from pytorch_lightning.loggers import CSVLogger
from tiny import digits_convnet, quiet_trainer

from cnn_tricks.callbacks import ActivationHealth, FirstLayerFilters, LossCurveDiagnosis, TrainingReport, TrainValGap


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
