"""What the trick callbacks may read and set on the LightningModule, beyond LightningModule / nn.Module.

The callbacks take any `LightningModule` (their `pl_module` parameters stay typed so); `TrickModule`
names the few extra attributes some of them use, who provides each and who reads it. The project's
`ImageClassifier` (module.py) provides every attribute of `PROVIDED_BY_MODULE`; a module of your
own works with every callback when it provides them too, and with most when it does not: each
reader falls back (listed below) when the attribute is missing. Attributes of
`SET_BY_CALLBACKS` are written by the callbacks themselves, on the module they act on.

One more mark is not on the LightningModule but on its layers: `pretrained_weights` (the weights'
name or checkpoint path), set by the generated `backbones.py` (torchvision weights) and by
`ImageClassifier.load_pretrained` on every layer they loaded; the init callbacks (`init_schemes`
`PRETRAINED_ATTR`) leave such layers alone.

tests/test_callback_protocol.py checks that the project's module provides `PROVIDED_BY_MODULE` and that
no callback reads a `pl_module.<name>` that is neither here nor a LightningModule attribute.

`__all__` is empty on purpose: this is documentation with a test, not a config class for the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn

__all__: list[str] = []


class TrickModule(Protocol):
    """The attributes callbacks use on the LightningModule besides LightningModule's own (see the module docstring)."""

    # Set by ImageClassifier.__init__ (the built backbone; forward is `self.backbone(images)`).
    # Read by finetune_parts.find_backbone (LinearProbe, FinetuneTop, FinetuneAll, StageProbe, AutoFinetune:
    # stages, blocks, head) and CompileModel (what it compiles); without it they use the whole module.
    backbone: nn.Module

    # Lightning's own attribute (None by default); ImageClassifier.__init__ sets a zero batch of one image.
    # Read by ActivationSwap (shape probe for channel counts and shared modules), SizeCheck (shape table)
    # and StageProbe (width of each stage); without a tensor they fall back or warn.
    example_input_array: torch.Tensor | None

    # Set by ImageClassifier (__init__ for torchvision weights, load_pretrained for a checkpoint): where the
    # weights came from, None for a random init. Read by the init callbacks (init_schemes.InitCallback: nothing
    # is re-initialized when set and no layer is marked) and finetune_parts.ensure_pretrained (warns when None).
    pretrained_source: str | None

    # Lightning's own (save_hyperparameters); ImageClassifier saves the keys "backbone" (its name) and
    # "backbone_options". Read by ActivationSwap to name the backbone in its error message, and by
    # TrainValGap to suggest only the recipes that fit the backbone.
    hparams: Mapping[str, Any]

    # Set by ActivationSwap.setup (the activation swapped in) on the module it rewrote; read by ActivationSwap
    # so fit-then-test swaps once and a second, different swap is refused. Never set by the module.
    _swapped_activation: str

    def load_pretrained(self) -> None:
        """Load the pretrained checkpoint into the backbone now; a second call does nothing.

        Defined by ImageClassifier (its fit `setup` calls it); called by finetune_parts.ensure_pretrained
        (the fine-tune strategies, AutoFinetune) before they freeze or measure the backbone.
        """
        ...


# What a LightningModule should provide for every callback to work fully (the project's ImageClassifier does).
PROVIDED_BY_MODULE = ("backbone", "example_input_array", "pretrained_source", "hparams", "load_pretrained")
# What callbacks write themselves: a fresh module has none of these.
SET_BY_CALLBACKS = ("_swapped_activation",)
