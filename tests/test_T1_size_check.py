"""T1 — size check: the shape table follows the sizing rules (3x3/s1/p1 keeps W x H, 2x2 pool halves);
a non-power-of-2 input, a shrinking conv and an odd-sized pool each give a warning naming the layer."""

from __future__ import annotations

import importlib
import logging

import pytest
import torch
from pytorch_lightning.loggers import CSVLogger
from tiny import TinyClassifier, quiet_trainer, random_loader
from torch import nn

from cnn_tricks.callbacks.size_check import SizeCheck, shape_table, size_warnings


def sized_convnet(pkg, **options):
    return importlib.import_module(f"{pkg.__name__}.backbones").SizedConvNet(1, 10, **options)


def test_T1_shape_table_follows_the_sizing_rules(pkg):
    net = sized_convnet(pkg, widths=(8, 16, 32), convs_per_stage=2)
    rows = shape_table(net, torch.zeros(1, 1, 32, 32))
    for row in rows:
        if isinstance(row.module, nn.Conv2d):
            assert row.output_shape[2:] == row.input_shape[2:]  # W x H kept
        if isinstance(row.module, nn.MaxPool2d):
            assert row.output_shape[2:] == tuple(s // 2 for s in row.input_shape[2:])
    sides = [r.output_shape[-1] for r in rows if isinstance(r.module, (nn.Conv2d, nn.MaxPool2d))]
    assert sides == [32, 32, 16, 16, 16, 8, 8, 8, 4]
    assert rows[-1].output_shape == (1, 10)
    assert size_warnings(rows, (1, 1, 32, 32)) == []


def test_T1_the_probe_leaves_the_model_as_it_was_even_on_error():
    """One eval, no-grad forward (callbacks/probe.py): BatchNorm statistics untouched, each module's own
    training flag back, and no hook left behind, also when the forward raises."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(), nn.Flatten(), nn.Linear(256, 2))
    net.train()
    net[1].eval()  # mixed flags, as a frozen BatchNorm has them
    flags = [m.training for m in net.modules()]
    running_mean = net[1].running_mean.clone()
    rows = shape_table(net, torch.randn(1, 1, 8, 8))
    assert [r.name for r in rows] == ["0", "1", "2", "3", "4"] and rows[-1].output_shape == (1, 2)
    assert torch.equal(net[1].running_mean, running_mean)
    assert [m.training for m in net.modules()] == flags
    broken = nn.Sequential(*net[:4], nn.Linear(5, 2))  # 256 features into a 5-input layer: the forward raises
    with pytest.raises(RuntimeError):
        shape_table(broken, torch.randn(1, 1, 8, 8))
    assert [m.training for m in broken.modules()][1:] == flags[1:]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in broken.modules())


def test_T1_a_48x48_input_warns_that_it_is_not_a_power_of_2(pkg):
    net = sized_convnet(pkg, widths=(8, 16, 32))
    check = SizeCheck()
    check.check(net, torch.zeros(1, 1, 48, 48))
    assert len(check.warnings) == 1 and "48x48 seen by layer '0' is not a power of 2" in check.warnings[0]


def test_T1_a_28x28_input_also_warns_at_the_pool_that_drops_pixels(pkg):
    check = SizeCheck()
    check.check(sized_convnet(pkg, widths=(8, 16, 32), convs_per_stage=1, batch_norm=False), torch.zeros(1, 1, 28, 28))
    assert "not a power of 2" in check.warnings[0]
    # 28 -> 14 -> 7: the third pool (layer 8 of conv, ReLU, pool x3) rounds 7 down to 3.
    assert any("layer '8' (MaxPool2d) pools an odd-sized map 7x7 -> 3x3" in w for w in check.warnings)


def test_T1_a_conv_without_padding_warns_naming_the_layer():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, stride=2, padding=1))  # the stride-2 conv shrinks on purpose
    warnings = size_warnings(shape_table(net, torch.zeros(1, 1, 32, 32)), (1, 1, 32, 32))
    assert len(warnings) == 1 and "layer '2' (Conv2d, kernel (3, 3), padding (0, 0)) shrinks the map 32x32 -> 30x30" in warnings[0]


def classifier(backbone: nn.Module, image_size: int) -> TinyClassifier:
    """`backbone` (its layers named backbone.*) with an example input the size check can probe."""
    return TinyClassifier({"backbone": backbone}, lr=0.1, example_input=torch.zeros(1, 1, image_size, image_size))


def test_T1_callback_prints_warns_and_saves_the_table_at_fit_start(pkg, tmp_path, caplog):
    model = classifier(sized_convnet(pkg, widths=(4, 8)), image_size=48)
    data = random_loader(4, side=48, classes=10, batch_size=4)
    logger = CSVLogger(tmp_path, name="run")
    trainer = quiet_trainer(callbacks=[SizeCheck()], max_steps=1, logger=logger)
    with pytest.warns(UserWarning, match="48x48 seen by layer 'backbone.0' is not a power of 2"), caplog.at_level(logging.INFO):
        trainer.fit(model, data)
    saved = (tmp_path / "run" / "version_0" / "size_check.txt").read_text()
    assert "backbone.3" in saved and "4x48x48" in saved and "not a power of 2" in saved
    assert "layer-by-layer shapes" in caplog.text and "backbone.3" in caplog.text and "MaxPool2d" in caplog.text


def test_T1_fast_dev_run_writes_no_table(pkg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = classifier(sized_convnet(pkg, widths=(4, 8)), image_size=32)
    data = random_loader(4, side=32, classes=10, batch_size=4)
    check = SizeCheck()
    # Lightning's default logger and checkpointing on: under fast_dev_run nothing at all may be written
    quiet_trainer(tmp_path, [check], fast_dev_run=True, logger=True, enable_checkpointing=True).fit(model, data)
    assert "backbone.3" in check.table and list(tmp_path.iterdir()) == []


def test_T1_input_shape_is_checked():
    with pytest.raises(ValueError, match=r"input_shape=\[0, 32, 32\]"):
        SizeCheck(input_shape=[0, 32, 32])
