"""T4 — Fine-tuning helpers: a backbone's stages, blocks and head, and the freezing they share.

The fine-tune strategies (finetune_strategies.py, finetune_auto.py) need to know, for any backbone,
which modules are the feature stages (for per-stage probes), which are the blocks counted by
"fine-tune the last N blocks", and which module is the classifier head. This module finds them for
the project's backbones by their structure, so it needs no import of the generated package:

- a backbone with a `finetune_parts()` method returns its own `BackboneParts` (the extension point);
- torchvision and timm ResNets: stages = stem, layer1..layer4; blocks = stem + each residual block; head = fc;
- timm EfficientNet/MobileNetV3 (conv_stem, bn1, blocks): stages = stem + each `blocks[i]`; blocks = stem +
  each inverted-residual block; the 1x1 `conv_head` ends the last stage where it runs before the pool
  (EfficientNet) and rides with the head where it runs after it (MobileNetV3);
- plain sequential convnets such as SizedConvNet: a stage ends at each pooling layer, a block is one
  conv with its BatchNorm/activation, the head is the last Linear (with the dropout/flatten before it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["BackboneParts", "backbone_parts", "freeze_bn_stats", "stage_features"]

_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class BackboneParts:
    """Modules of a backbone in forward order; `stages` and `blocks` both cover everything but `head`."""

    stages: list[nn.Module]
    blocks: list[nn.Module]
    head: nn.Module


def _sequential_parts(net: nn.Sequential) -> BackboneParts:
    layers = list(net)
    head_index = max(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
    features_end = max([i for i, m in enumerate(layers[:head_index]) if isinstance(m, _POOLS)], default=-1) + 1
    if features_end == 0:
        raise ValueError(f"backbone_parts: no pooling layer in {type(net).__name__}, so no stages to find.")
    stages, start = [], 0
    for i in range(features_end):
        if isinstance(layers[i], _POOLS):
            stages.append(nn.Sequential(*layers[start:i + 1]))
            start = i + 1
    blocks, current = [], []
    for layer in layers[:features_end]:
        if isinstance(layer, nn.Conv2d) and current:
            blocks.append(nn.Sequential(*current))
            current = []
        current.append(layer)
    blocks.append(nn.Sequential(*current))
    # The tail before the head (global pool, flatten, dropout) has no parameters; it rides with the head.
    return BackboneParts(stages, blocks, nn.Sequential(*layers[features_end:]))


def _timm_efficientnet_parts(net: nn.Module) -> BackboneParts:
    """timm's EfficientNet (conv_head, bn2 before the pool) and MobileNetV3 (pool, conv_head, norm_head, act2 after it)."""
    stem = nn.Sequential(net.conv_stem, net.bn1)
    stages = [stem, *net.blocks]
    blocks = [stem, *(block for stage in net.blocks for block in stage)]
    if hasattr(net, "bn2"):  # EfficientNet: the 1x1 conv head is the last feature layer
        stages[-1] = nn.Sequential(stages[-1], net.conv_head, net.bn2)
        blocks[-1] = nn.Sequential(blocks[-1], net.conv_head, net.bn2)
        return BackboneParts(stages, blocks, nn.Sequential(net.global_pool, net.classifier))
    head = [net.global_pool, net.conv_head, net.norm_head, net.act2, net.flatten, net.classifier]
    return BackboneParts(stages, blocks, nn.Sequential(*head))


def backbone_parts(backbone: nn.Module) -> BackboneParts:
    """Stages, blocks and head of `backbone` (see the module docstring for the rules)."""
    if hasattr(backbone, "finetune_parts"):
        return backbone.finetune_parts()
    if all(hasattr(backbone, name) for name in ("conv1", "bn1", "layer1", "layer4", "fc")):  # torchvision/timm ResNet
        activation = backbone.relu if hasattr(backbone, "relu") else backbone.act1  # timm names it act1
        stem = nn.Sequential(backbone.conv1, backbone.bn1, activation, backbone.maxpool)
        layers = [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
        return BackboneParts([stem, *layers], [stem, *(block for layer in layers for block in layer)], backbone.fc)
    if all(hasattr(backbone, name) for name in ("conv_stem", "bn1", "blocks", "conv_head", "global_pool", "classifier")):
        return _timm_efficientnet_parts(backbone)
    if isinstance(backbone, nn.Sequential) and any(isinstance(m, nn.Linear) for m in backbone):
        return _sequential_parts(backbone)
    raise ValueError(
        f"backbone_parts: cannot split a {type(backbone).__name__} into stages and head; give it a "
        "`finetune_parts()` method returning BackboneParts(stages, blocks, head)."
    )


def find_backbone(pl_module: nn.Module) -> nn.Module:
    """The module's `backbone` attribute (the project's convention, `protocol.TrickModule`), else the module itself."""
    return getattr(pl_module, "backbone", pl_module)


def freeze_bn_stats(modules: list[nn.Module]) -> None:
    """Put every BatchNorm inside `modules` in eval mode, so its running statistics stay as they are."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, _BN):
                layer.eval()


@torch.no_grad()
def stage_features(parts: BackboneParts, images: torch.Tensor) -> list[torch.Tensor]:
    """Globally average-pooled output of every stage, in order (each `batch x channels`)."""
    features, x = [], images
    for stage in parts.stages:
        x = stage(x)
        features.append(x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1))
    return features


def ensure_pretrained(pl_module: nn.Module, owner: str) -> None:
    """Load the module's pretrained weights now (before freezing or measuring) when it can; fine-tuning a
    random backbone still runs, but the user most likely forgot the weights: say so. Uses the module's
    `load_pretrained` and `pretrained_source` when it has them (`protocol.TrickModule`)."""
    if hasattr(pl_module, "load_pretrained"):  # the project's ImageClassifier; loading twice is a no-op
        pl_module.load_pretrained()
    if hasattr(pl_module, "pretrained_source") and pl_module.pretrained_source is None:
        warnings.warn(
            f"{owner}: the backbone has no pretrained weights, so it is fine-tuned from its random init. Give "
            "--model.pretrained_checkpoint=<runs/.../checkpoints/best.ckpt> or, for ResNets, "
            "--model.backbone_options='{weights: DEFAULT}' (needs the network once).",
            stacklevel=2,
        )
