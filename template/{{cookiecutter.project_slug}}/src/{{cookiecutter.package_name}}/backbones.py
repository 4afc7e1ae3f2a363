"""Backbones: the lecture's sized convnet (T1) and torchvision ResNets adapted to small images.

`build_backbone(name, in_channels, num_classes, image_size, **options)` is the single entry point
the LightningModule uses, so a new backbone is one function added to `BACKBONES`.

`timm/<name>` (e.g. `timm/resnet18`, `timm/mobilenetv3_small_050`, `timm/efficientnet_b0`) is any model
of the timm library (Wightman, PyTorch Image Models), built by `timm.create_model` with the options as
its keyword arguments; install it with `pip install -e '.[timm]'`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .layers.activations import ACTIVATIONS, Activation, activation_factory


class SizedConvNet(nn.Sequential):
    """A plain convnet built by the lecture's sizing rules (trick T1).

    Every conv is 3x3, stride 1, padding 1, so it keeps W x H; every stage ends with a 2x2 max-pool
    that halves it; the input side should be a power of 2 so the halvings stay exact. A global
    average pool and one linear layer make the classifier, so the same net takes any input size.

    Args:
        in_channels: image channels.
        num_classes: output classes.
        widths: channels of each stage; one 2x2 pool per stage.
        convs_per_stage: 3x3 convs before each pool: one count for all stages, or one per stage
            (e.g. [2, 2, 3, 3] for a VGG-like depth).
        batch_norm: BatchNorm after every conv.
        dropout: dropout probability before the classifier.
        stage_dropout: dropout probability after each stage's pool (R5): one for all stages, or
            one per stage (e.g. [0.1, 0.2, 0.3]); 0 adds no layer.
        spatial_dropout: stage dropout drops whole channels (nn.Dropout2d) instead of single units.
        activation: the nonlinearity after every conv (F1-F6): built in, so our own backbone needs no
            surgery;  (recipes activation/*) is for backbones we do not own. Maxout
            rewrites layers and stays a swap (recipe activation/maxout).

    Example:
        >>> net = SizedConvNet(in_channels=1, num_classes=10)
        >>> net(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        convs_per_stage: int | Sequence[int] = 2,
        batch_norm: bool = True,
        dropout: float = 0.0,
        stage_dropout: float | Sequence[float] = 0.0,
        spatial_dropout: bool = False,
        activation: Activation = "relu",
    ) -> None:
        if activation not in ACTIVATIONS or activation == "maxout":
            raise ValueError(f"activation={activation!r}: choose one of {', '.join(a for a in ACTIVATIONS if a != 'maxout')} "
                             "(maxout rewrites layers: add the recipe activation/maxout).")
        make_activation = activation_factory(activation)
        if in_channels < 1 or num_classes < 2:
            raise ValueError(f"in_channels={in_channels}, num_classes={num_classes}: need >= 1 channel and >= 2 classes.")
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths={list(widths)}: give one positive channel count per stage, e.g. [32, 64, 128].")
        convs = _per_stage("convs_per_stage", convs_per_stage, len(widths))
        if any(int(c) != c or c < 1 for c in convs):
            raise ValueError(f"convs_per_stage={convs_per_stage}: use at least 1 conv per stage.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout}: use a probability in [0, 1).")
        drops = _per_stage("stage_dropout", stage_dropout, len(widths))
        if any(not 0.0 <= p < 1.0 for p in drops):
            raise ValueError(f"stage_dropout={stage_dropout}: use probabilities in [0, 1), e.g. 0.2 or [0.1, 0.2, 0.3].")
        layers: list[nn.Module] = []
        channels = in_channels
        for width, n_convs, drop in zip(widths, convs, drops, strict=True):
            for _ in range(int(n_convs)):
                layers.append(nn.Conv2d(channels, width, kernel_size=3, stride=1, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True) if activation == "relu" else make_activation(width))
                channels = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            if drop > 0:
                layers.append(nn.Dropout2d(drop) if spatial_dropout else nn.Dropout(drop))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)]
        super().__init__(*layers)
        self.min_input_size = 2 ** len(widths)


def _per_stage(name: str, value, stages: int) -> list:
    """One value per stage from a number or a list of exactly `stages` numbers."""
    if isinstance(value, (int, float)):
        return [value] * stages
    values = list(value)
    if len(values) != stages:
        raise ValueError(f"{name}={values}: give one number, or one per stage ({stages} for these widths).")
    return values


def _resnet(name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int, image_size: int, weights: str | None = None) -> nn.Module:
        import torchvision

        net = torchvision.models.get_model(name, weights=weights)
        if weights is not None:
            # Marks the loaded layers so init callbacks leave them alone (callbacks/init_schemes.py,
            # PRETRAINED_ATTR); the layers replaced below are new and unmarked.
            for module in net.modules():
                module.pretrained_weights = weights
        if net.fc.out_features != num_classes:
            net.fc = nn.Linear(net.fc.in_features, num_classes)
        if image_size <= 64:
            # The ImageNet stem (7x7 stride 2 + max-pool) shrinks a 32x32 image to 8x8 before the
            # first block; small images keep their resolution with a 3x3 stride-1 stem instead.
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            if weights is not None:  # keep pretrained filters: average them over the RGB channels
                with torch.no_grad():
                    net.conv1.weight.copy_(old.weight.mean(dim=1, keepdim=True).expand_as(net.conv1.weight))
                net.conv1.pretrained_weights = weights
        return net

    return build


def _sized_convnet(in_channels: int, num_classes: int, image_size: int, **options) -> nn.Module:
    net = SizedConvNet(in_channels, num_classes, **options)
    if image_size < net.min_input_size:
        raise ValueError(
            f"image_size={image_size} is too small for {len(options.get('widths', (32, 64, 128)))} pooling "
            f"stages: use data.image_size >= {net.min_input_size} or fewer widths."
        )
    return net


TIMM_PREFIX = "timm/"
TIMM_INSTALL = "pip install -e '.[timm]'"


def _timm(name: str, in_channels: int, num_classes: int, image_size: int, /, pretrained: bool = False,
          **options) -> nn.Module:
    """`timm.create_model(name, pretrained, num_classes, in_chans, **options)`, as timm builds it.

    The net is not adapted to small images (timm's stems stride by 4, a 32px input reaches the last
    stage at 1x1): it stays the published architecture, so its pretrained weights and the timm
    recipes apply. `pretrained: true` downloads from the Hugging Face hub (needs the network once);
    offline, give a saved timm `state_dict` (.pth/.safetensors) as `model.pretrained_checkpoint`.
    The model's own data config (mean, std, input size, from `timm.data.resolve_data_config`) is kept
    as `pretrained_data_config`; with pretrained weights the CLI feeds it to the data (see
    `pretrained_data_config()` and `CLI`).
    """
    try:
        import timm
    except ImportError as error:
        raise ImportError(f"model.backbone={TIMM_PREFIX + name!r} needs the timm library: {TIMM_INSTALL}") from error
    if ":" not in name and not timm.is_model(name):  # `hf-hub:<repo>` names are resolved by create_model
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"closest: {', '.join(close)}" if close else f"list them with timm.list_models('*{name[:4]}*')"
        raise ValueError(f"model.backbone={TIMM_PREFIX + name!r}: timm has no model {name!r} ({hint}).")
    clashing = sorted({"num_classes", "in_chans"} & options.keys())
    if clashing:
        raise ValueError(f"model.backbone_options sets {', '.join(clashing)}: these come from the data "
                         "(data.num_classes / the image channels); remove them.")
    net = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **options)
    if pretrained:  # mark the loaded layers (init callbacks leave them alone); the new head is unmarked
        head = set(map(id, net.get_classifier().modules()))
        for module in net.modules():
            if id(module) not in head:
                module.pretrained_weights = f"timm:{name}"
    config = timm.data.resolve_data_config(model=net)
    net.pretrained_data_config = {key: config[key] for key in ("mean", "std", "input_size")}
    return net


def pretrained_data_config(backbone: str) -> dict | None:
    """timm's published data config of a `timm/<name>` backbone: `{"mean", "std", "input_size"}` (the
    normalization and input size its pretrained weights were trained with), read from timm's model
    registry without building the net or touching the network; None for other backbones or when timm
    has no config for the name."""
    if not backbone.startswith(TIMM_PREFIX):
        return None
    try:
        from timm.models import get_pretrained_cfg
    except ImportError:
        return None
    cfg = get_pretrained_cfg(backbone.removeprefix(TIMM_PREFIX))
    if cfg is None or not cfg.mean or not cfg.input_size:
        return None
    return {"mean": tuple(cfg.mean), "std": tuple(cfg.std), "input_size": tuple(cfg.input_size)}


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "sized_convnet": _sized_convnet,
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
}


def build_backbone(name: str, in_channels: int, num_classes: int, image_size: int, /, **options) -> nn.Module:
    """Build the backbone called `name` (a `BACKBONES` key or `timm/<model>`); unknown names and options fail
    with the valid ones."""
    if name.startswith(TIMM_PREFIX):
        build = functools.partial(_timm, name.removeprefix(TIMM_PREFIX))
    elif name in BACKBONES:
        build = BACKBONES[name]
    else:
        raise ValueError(f"model.backbone={name!r} is unknown: choose one of {', '.join(BACKBONES)}, "
                         f"or {TIMM_PREFIX}<name> for a timm model ({TIMM_INSTALL}).")
    try:
        return build(in_channels, num_classes, image_size, **options)
    except TypeError as error:
        raise ValueError(f"model.backbone_options={options} do not fit backbone {name!r}: {error}") from error
