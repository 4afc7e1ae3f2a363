"""`model.backbone: timm/<name>`: any timm model as the backbone, and which trick recipes work on it.

Two timm families: a ResNet (`resnet10t`) and a MobileNetV3 (`mobilenetv3_small_050`), always with
`pretrained: false` (no network), 32px digits, one batch (`fast_dev_run`). Each recipe test asserts
what the recipe did to the timm net, or the exact refusal."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("timm")

RESNET, MOBILENET = "timm/resnet10t", "timm/mobilenetv3_small_050"
FAST = ["--data.num_workers=0", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.logger=CSVLogger", "--trainer.logger.save_dir=runs",
        "--trainer.fast_dev_run=true", "--seed_everything=0"]


@pytest.fixture
def build(cli_in_process):
    """`build(backbone, *recipes)`: the CLI's model, data and trainer for `fit` on that timm backbone."""
    return lambda backbone, *recipes: cli_in_process(recipes, *FAST, f"--model.backbone={backbone}",
                                                     "--model.backbone_options={pretrained: false}")


def fit(cli) -> None:
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)


@pytest.fixture
def backbones(pkg):
    return importlib.import_module(f"{pkg.__name__}.backbones")


@pytest.mark.parametrize("backbone", [RESNET, MOBILENET])
def test_timm_backbone_trains_through_the_cli(build, backbone):
    import timm

    cli = build(backbone)
    fit(cli)
    net = cli.model.backbone
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert type(net) is type(timm.create_model(backbone.removeprefix("timm/")))  # timm's own class, unchanged
    assert (net.num_classes, next(net.parameters()).shape[1]) == (10, 1)  # digits: 10 classes, 1 channel
    # The model's own data config rides along (ImageNet statistics for these two).
    assert net.pretrained_data_config["mean"] == (0.485, 0.456, 0.406)


def test_backbone_options_reach_timm_create_model(backbones):
    net = backbones.build_backbone(RESNET, 3, 5, 32, pretrained=False, drop_rate=0.2)
    assert (net.drop_rate, net.num_classes) == (0.2, 5)
    with pytest.raises(ValueError, match=r"model.backbone_options sets num_classes: these come from the data"):
        backbones.build_backbone(RESNET, 3, 5, 32, num_classes=7)
    with pytest.raises(ValueError, match=r"model.backbone_options=\{'no_such_option': 1\} do not fit backbone"):
        backbones.build_backbone(RESNET, 3, 5, 32, no_such_option=1)


def test_unknown_timm_name_names_the_value_and_the_closest_models(backbones):
    with pytest.raises(ValueError) as error:
        backbones.build_backbone("timm/resnet181", 1, 10, 32)
    assert str(error.value).startswith("model.backbone='timm/resnet181': timm has no model 'resnet181' (closest: ")
    assert "resnet18" in str(error.value)


def test_missing_timm_names_the_extra_to_install(backbones, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(ImportError, match=r"model.backbone='timm/resnet10t' needs the timm library: "
                                          r"pip install -e '\.\[timm\]'"):
        backbones.build_backbone(RESNET, 1, 10, 32)


def test_pretrained_checkpoint_reads_a_timm_safetensors_file(pkg, backbones, tmp_path):
    from safetensors.torch import save_file

    donor = backbones.build_backbone(RESNET, 1, 10, 32)
    save_file(donor.state_dict(), tmp_path / "resnet10t.safetensors")
    model = importlib.import_module(f"{pkg.__name__}.module").ImageClassifier(
        backbone=RESNET, pretrained_checkpoint=str(tmp_path / "resnet10t.safetensors"))
    model.load_pretrained()
    for key, value in donor.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert model.backbone.fc.pretrained_weights == str(tmp_path / "resnet10t.safetensors")


def test_he_init_on_timm_resnet_initializes_every_conv_and_linear(build):
    cli = build(RESNET, "init/he")
    fit(cli)
    (he,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "HeInit"]
    expected = {f"backbone.{name}" for name, m in cli.model.backbone.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert expected and set(he.initialized) == expected


def test_prelu_swap_on_timm_mobilenet_replaces_every_relu_and_hardswish(build):
    cli = build(MOBILENET, "activation/prelu")
    before = sum(isinstance(m, (nn.ReLU, nn.Hardswish)) for m in cli.model.backbone.modules())
    gates = sum(isinstance(m, nn.Hardsigmoid) for m in cli.model.backbone.modules())
    fit(cli)
    kinds = [type(m) for m in cli.model.backbone.modules()]
    assert before > 0 and nn.ReLU not in kinds and nn.Hardswish not in kinds
    assert kinds.count(nn.PReLU) == before  # one per activation module (none is called twice here)
    assert kinds.count(nn.Hardsigmoid) == gates  # squeeze-excite gates are not activations to swap


def test_maxout_refuses_timm_resnet_naming_the_recipe_and_backbone(build):
    cli = build(RESNET, "activation/maxout")
    with pytest.raises(ValueError, match=r"ActivationSwap\(activation='maxout'\) \(backbone 'timm/resnet10t'\): "
                                         r"Maxout cannot rewrite ImageClassifier: backbone.act1 is called from ResNet"):
        fit(cli)


@pytest.mark.parametrize(("backbone", "recipe", "blocks"), [(RESNET, "finetune/linear-probe", 0),
                                                             (MOBILENET, "finetune/finetune-top", 2)])
def test_finetune_recipes_train_exactly_the_head_and_top_blocks(pkg, build, backbone, recipe, blocks):
    backbone_parts = importlib.import_module(f"{pkg.__name__}.callbacks.finetune_parts").backbone_parts
    cli = build(backbone, recipe)
    with pytest.warns(UserWarning, match="the backbone has no pretrained weights"):
        fit(cli)
    parts = backbone_parts(cli.model.backbone)
    trainable = [parts.head, *parts.blocks[len(parts.blocks) - blocks:]]
    expected = {id(p) for module in trainable for p in module.parameters()}
    assert {id(p) for p in cli.model.backbone.parameters() if p.requires_grad} == expected


@pytest.fixture
def pretrained_resnet(backbones, tmp_path):
    """A local timm `state_dict` of resnet10t (the offline form of `pretrained: true`)."""
    from safetensors.torch import save_file

    path = tmp_path / "resnet10t.safetensors"
    save_file(backbones.build_backbone(RESNET, 1, 10, 32).state_dict(), path)
    return path


def test_pretrained_timm_backbone_brings_its_input_size_and_statistics(cli_in_process, pretrained_resnet):
    cli = cli_in_process([], *FAST, f"--model.backbone={RESNET}", f"--model.pretrained_checkpoint={pretrained_resnet}")
    # timm's data config for resnet10t: 176px, ImageNet mean/std (averaged over RGB for 1-channel digits).
    assert cli.datamodule.image_size == cli.model.hparams.image_size == 176
    state = cli.datamodule.fit_preprocessing()
    assert torch.allclose(state["shift"], torch.tensor([(0.485 + 0.456 + 0.406) / 3]))
    assert torch.allclose(state["scale"], torch.tensor([(0.229 + 0.224 + 0.225) / 3]))
    cli.datamodule.setup("fit")
    images, _ = next(iter(cli.datamodule.train_dataloader()))
    assert images.shape[-2:] == (176, 176)


def test_the_config_overrides_a_pretrained_backbones_data_config(cli_in_process, pretrained_resnet):
    cli = cli_in_process([], *FAST, f"--model.backbone={RESNET}", f"--model.pretrained_checkpoint={pretrained_resnet}",
                         "--data.image_size=32", "--data.preprocess=standardize")
    assert cli.datamodule.image_size == cli.model.hparams.image_size == 32
    measured = cli.datamodule.fit_preprocessing()  # the digits' own statistics, measured on the training split
    assert not torch.allclose(measured["shift"].flatten()[:1], torch.tensor([0.449]), atol=0.05)


def test_a_timm_backbone_trained_from_scratch_keeps_the_datasets_size_and_statistics(build, pkg):
    cli = build(RESNET)
    own = pkg.ImageDataModule("digits", image_size=32).fit_preprocessing()  # measured on the training split
    assert cli.datamodule.image_size == 32
    assert torch.equal(cli.datamodule.fit_preprocessing()["shift"], own["shift"])
