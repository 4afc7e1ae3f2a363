"""Speed — channels_last: the model's 4-D weights, and so its activations, stored NHWC.

Lecture: none (it predates this trick); a GPU speed trick. Composer ships the same trick as its
`ChannelsLast` algorithm; Lightning has no switch for it, hence this callback.

Card:
    What: converts the LightningModule's 4-D parameters and buffers to `torch.channels_last`
        once, when fit/validate/test/predict starts. Convolutions then take and return NHWC
        activations (an NCHW input batch is converted by the first convolution).
    When it helps: NVIDIA GPUs from Volta on, with bf16/fp16 autocast (`trainer/bf16`): cuDNN's
        tensor-core kernels want NHWC, typically 10-30% faster steps for conv nets. On CPU it is
        about neutral.
    Cost: one conversion at start; nothing per step. Values, state_dict keys and checkpoints are
        unchanged (only the strides differ).
"""

from __future__ import annotations

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from typing_extensions import override

__all__ = ["ChannelsLast", "to_channels_last"]


def to_channels_last(module: torch.nn.Module) -> int:
    """Convert every 4-D parameter and buffer of `module` to channels_last; returns how many were 4-D."""
    four_d = sum(1 for t in [*module.parameters(), *module.buffers()] if t.dim() == 4)
    module.to(memory_format=torch.channels_last)
    return four_d


class ChannelsLast(Callback):
    """Store the model's conv weights (and so its activations) in NHWC order.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[ChannelsLast()], precision="bf16-mixed")
    """

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if to_channels_last(pl_module) == 0:
            raise ValueError("ChannelsLast: the model has no 4-D weights (no convolutions); remove the trainer/channels-last recipe.")
