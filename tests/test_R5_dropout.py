"""R5 — dropout per stage of the sized convnet: active in training (about p of the units zeroed,
whole channels with spatial dropout), the identity in eval, one rate per block."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn


@pytest.fixture
def backbones(pkg):
    return importlib.import_module(f"{pkg.__name__}.backbones")


def dropout_layers(net: nn.Module) -> list[tuple[int, nn.Module]]:
    return [(i, m) for i, m in enumerate(net) if isinstance(m, (nn.Dropout, nn.Dropout2d))]


def test_R5_one_rate_per_block_after_each_pool(backbones):
    net = backbones.SizedConvNet(1, 10, widths=(8, 16, 32), convs_per_stage=1, batch_norm=False, stage_dropout=[0.0, 0.25, 0.5])
    found = dropout_layers(net)
    # stage = conv, ReLU, pool (+ dropout); rate 0 adds no layer; the classifier's own dropout comes last.
    assert [(i, m.p) for i, m in found] == [(6, 0.25), (10, 0.5), (13, 0.0)]
    assert all(isinstance(net[i - 1], nn.MaxPool2d) for i, _ in found[:2])


def test_R5_active_in_training_identity_in_eval(backbones):
    torch.manual_seed(0)
    net = backbones.SizedConvNet(1, 10, widths=(8, 16), batch_norm=False, stage_dropout=0.5)
    x = torch.randn(16, 1, 32, 32)
    zeroed = []
    hooks = [m.register_forward_hook(lambda m, i, o: zeroed.append((((o == 0) & (i[0] != 0)).sum() / (i[0] != 0).sum()).item()))
             for _, m in dropout_layers(net)[:2]]
    net.train()
    first, second = net(x), net(x)
    assert not torch.allclose(first, second)  # a new mask each pass
    measured = zeroed[:2]
    print("fraction of live units zeroed by each stage dropout (p = 0.5), training:", [f"{z:.3f}" for z in measured])
    assert all(0.47 < z < 0.53 for z in measured)
    for hook in hooks:
        hook.remove()
    net.eval()
    plain = nn.Sequential(*[m for m in net if not isinstance(m, (nn.Dropout, nn.Dropout2d))])
    assert torch.equal(net(x), net(x)) and torch.equal(net(x), plain(x))  # the same net without dropout


def test_R5_spatial_dropout_drops_whole_channels(backbones):
    torch.manual_seed(0)
    net = backbones.SizedConvNet(1, 10, widths=(8, 16), stage_dropout=0.5, spatial_dropout=True).train()
    (_, layer), *_ = dropout_layers(net)
    assert isinstance(layer, nn.Dropout2d)
    out = layer(torch.rand(4, 8, 16, 16) + 0.1)
    per_channel = (out == 0).flatten(2).float().mean(-1)
    assert set(per_channel.unique().tolist()) == {0.0, 1.0}  # every channel is either kept or dropped whole


def test_R5_convs_per_stage_can_differ_per_block(backbones):
    net = backbones.SizedConvNet(1, 10, widths=(8, 16, 32), convs_per_stage=[1, 2, 3])
    assert sum(isinstance(m, nn.Conv2d) for m in net) == 6


@pytest.mark.parametrize(("options", "message"), [
    ({"stage_dropout": [0.1, 0.2]}, r"stage_dropout=\[0.1, 0.2\]: give one number, or one per stage \(3"),
    ({"stage_dropout": 1.0}, r"stage_dropout=1.0: use probabilities in \[0, 1\)"),
    ({"convs_per_stage": [2, 0, 2]}, r"convs_per_stage=\[2, 0, 2\]: use at least 1"),
])
def test_R5_bad_options_name_the_value(backbones, options, message):
    with pytest.raises(ValueError, match=message):
        backbones.build_backbone("sized_convnet", 1, 10, 32, **options)


def test_R5_a_recipe_that_replaces_the_backbone_options_names_what_no_longer_applies(pkg, project, tmp_path):
    """LightningCLI replaces a dict value as a whole: the dropout recipe after a config with its own widths
    trains the default widths. The CLI says so at start, naming the options and both places."""
    preflight = importlib.import_module(f"{pkg.__name__}.preflight")
    small = tmp_path / "small.yaml"
    small.write_text("model:\n  backbone_options:\n    widths: [16, 32, 64]\n    convs_per_stage: 1\n")
    recipe = project / "recipes" / "regularize" / "dropout.yaml"
    (note,) = preflight.replaced_options(["fit", "--config", str(small), "--config", str(recipe)])
    assert note.startswith(f"note: model.backbone_options in {recipe} replaces the one in {small}")
    assert "widths=[16, 32, 64], convs_per_stage=1 no longer apply" in note
    (note,) = preflight.replaced_options([f"--config={small}", "--model.backbone_options", "{dropout: 0.5}"])
    assert "on the command line replaces the one in" in note
    # Options repeated with the new ones lose nothing, and a config without the dict replaces nothing.
    kept = "--model.backbone_options={widths: [16, 32, 64], convs_per_stage: 1, dropout: 0.5}"
    assert preflight.replaced_options(["--config", str(small), kept]) == []
    assert preflight.replaced_options(["--config", str(small), "--config", str(project / "configs" / "default.yaml")]) == []
