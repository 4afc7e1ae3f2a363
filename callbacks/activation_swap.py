"""F1–F7 — Activation swap: replace every activation of any backbone by sigmoid, tanh, ReLU, Leaky ReLU,
PReLU, RReLU (Xu et al.'s, as the lecture gives it), Maxout, or ELU/GELU/SiLU, by model surgery before training.

Lecture: "Activation functions" (sigmoid, tanh, ReLU, Leaky ReLU, Parametric ReLU, Randomized ReLU, Maxout;
"use ReLU, try Leaky ReLU / Maxout, try tanh but don't expect much, never use sigmoid").

Card:
    What: every activation module of the model (by default the ReLU family: ReLU, ReLU6, LeakyReLU,
        PReLU, RReLU, ELU, CELU, SELU, GELU, SiLU, Mish, Hardswish; pass `targets` to change it) is
        replaced by the chosen one. Names and the module each maps to:
            sigmoid -> nn.Sigmoid          tanh -> nn.Tanh            relu -> nn.ReLU
            leaky_relu -> nn.LeakyReLU(negative_slope)
            prelu -> nn.PReLU(num_parameters=channels, init=prelu_init): one learned slope per channel
            rrelu -> XuRReLU(lower, upper) (layers/xu_rrelu.py; NOT torch.nn.RReLU, see there why)
            maxout -> Maxout(pieces) (layers/maxout.py) after the preceding Conv2d/Linear (and BatchNorm)
                      widened k times
            elu -> nn.ELU                  gelu -> nn.GELU            silu -> nn.SiLU
    When it helps: comparing activations on the same backbone and data (F1–F4), learning the negative
        slope (F5), a regularizing random slope (F6), a unit that cannot die or saturate (F7).
    Cost: PReLU adds one parameter per channel and call site; Maxout multiplies the parameters and
        multiply-adds of each rewritten layer by k; the others are free.

Why here: neither torch nor Lightning swaps activations. The callback acts in `setup`, which Lightning
runs before `configure_optimizers` and before a checkpoint is loaded, so the optimizer (momentum
included) sees the new parameters (PReLU slopes, widened Maxout layers) and `fit --ckpt_path` /
`test --ckpt_path` load into the same architecture, provided the same recipe is given.

The surgery itself (channel probe, shared modules, Maxout widening) lives in
layers/activation_surgery.py, so it is usable on any nn.Module without a Trainer.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from ..layers.activation_surgery import swap_activations, swap_to_maxout
from ..layers.activations import ACTIVATIONS, DEFAULT_TARGETS, Activation, activation_factory
from ..layers.xu_rrelu import Sampling, XuRReLU

__all__ = ["ActivationSwap"]


class ActivationSwap(Callback):
    """Swap every activation of the LightningModule before training, validation, test or predict (F1–F7).

    Args:
        activation: one of sigmoid, tanh, relu, leaky_relu, prelu, rrelu, maxout, elu, gelu, silu
            (the modules they map to are listed in this file's docstring).
        negative_slope: Leaky ReLU's fixed slope.
        prelu_init: PReLU's initial slope (He et al. use 0.25).
        rrelu_lower, rrelu_upper: Xu et al.'s l and u: training slope 1/a, a ~ U(l, u); test slope 2/(l+u).
        rrelu_sample: "channel" (one a per example and channel, Xu et al.'s a_ji) or "element".
        maxout_pieces: k, the pieces per maxout unit.

    The model's `example_input_array` drives the shape probe (channel counts, shared modules); its
    `hparams["backbone"]` names the backbone in errors; `_swapped_activation` is set on it (all in
    `protocol.TrickModule`).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[ActivationSwap("prelu")])
    """

    def __init__(
        self,
        activation: Activation = "relu",
        negative_slope: float = 0.01,
        prelu_init: float = 0.25,
        rrelu_lower: float = 3.0,
        rrelu_upper: float = 8.0,
        rrelu_sample: Sampling = "channel",
        maxout_pieces: int = 2,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"ActivationSwap(activation={activation!r}): choose one of {', '.join(ACTIVATIONS)}.")
        if not negative_slope >= 0:
            raise ValueError(f"ActivationSwap(negative_slope={negative_slope}): use a slope >= 0, e.g. 0.01.")
        if not isinstance(maxout_pieces, int) or maxout_pieces < 2:
            raise ValueError(f"ActivationSwap(maxout_pieces={maxout_pieces}): use an integer >= 2, e.g. 2.")
        XuRReLU(rrelu_lower, rrelu_upper, rrelu_sample)  # validates l, u and the sampling mode with its message
        self.activation = activation
        self.maxout_pieces = maxout_pieces
        self.factory = None if activation == "maxout" else activation_factory(
            activation, negative_slope, prelu_init, rrelu_lower, rrelu_upper, rrelu_sample
        )

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        done = getattr(pl_module, "_swapped_activation", None)
        if done == self.activation:  # fit then test on the same module: already swapped
            return
        if done is not None:
            raise ValueError(
                f"ActivationSwap(activation={self.activation!r}): this model's activations were already swapped to "
                f"{done!r}; use one activation swap (one recipe of recipes/activation/)."
            )
        example = getattr(pl_module, "example_input_array", None)
        example = example if isinstance(example, torch.Tensor) else None
        try:
            if self.activation == "maxout":
                count = swap_to_maxout(pl_module, self.maxout_pieces, example)
            else:
                count = swap_activations(pl_module, self.factory, example)
        except ValueError as error:
            backbone = getattr(getattr(pl_module, "hparams", {}), "get", lambda *_: None)("backbone")
            where = f" (backbone {backbone!r})" if backbone else ""
            raise ValueError(f"ActivationSwap(activation={self.activation!r}){where}: {error}") from error
        if count == 0:
            raise ValueError(
                f"ActivationSwap(activation={self.activation!r}): {type(pl_module).__name__} has no activation "
                f"module of the types {', '.join(t.__name__ for t in DEFAULT_TARGETS)}; nothing to swap."
            )
        pl_module._swapped_activation = self.activation
        rank_zero_info(f"ActivationSwap: {count} activation modules replaced by {self.activation}.")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"activation": self.activation}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("activation")
        if saved is not None and saved != self.activation:
            raise ValueError(
                f"ActivationSwap(activation={self.activation!r}): the checkpoint was trained with {saved!r}; "
                f"use recipes/activation/{saved.replace('_', '-')}.yaml to resume it."
            )
