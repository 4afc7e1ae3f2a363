"""Activation modules by name: the one table that `SizedConvNet(activation=...)` and the activation swap share.

`activation_factory(name)` returns `channels -> nn.Module` (PReLU needs the channel count; the others
ignore it). Maxout is listed in `ACTIVATIONS` but has no factory: it widens the layer before it, which
`activation_surgery.swap_to_maxout` (or a network built with `MaxoutConv2d`) does.

`__all__` is empty on purpose: these are building blocks, not config classes for the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

from torch import nn

from .xu_rrelu import Sampling, XuRReLU

__all__: list[str] = []

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "rrelu", "maxout", "elu", "gelu", "silu")
Activation = Literal["sigmoid", "tanh", "relu", "leaky_relu", "prelu", "rrelu", "maxout", "elu", "gelu", "silu"]

# Sigmoid and Tanh are left out on purpose: in torchvision they gate (squeeze-excitation), they are not
# the hidden nonlinearity. Pass `targets` to swap them too.
DEFAULT_TARGETS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, XuRReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish,
)


Factory = Callable[[int], nn.Module]


def activation_factory(
    name: str,
    negative_slope: float = 0.01,
    prelu_init: float = 0.25,
    rrelu_lower: float = 3.0,
    rrelu_upper: float = 8.0,
    rrelu_sample: Sampling = "channel",
) -> Factory:
    """A function `channels -> new activation module` for `name` (every name of ACTIVATIONS but maxout,
    which rewrites layers and goes through `swap_to_maxout`).

    Example:
        >>> activation_factory("prelu")(16)
        PReLU(num_parameters=16)
    """
    simple: dict[str, Callable[[], nn.Module]] = {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leaky_relu": partial(nn.LeakyReLU, negative_slope),
        "rrelu": partial(XuRReLU, rrelu_lower, rrelu_upper, rrelu_sample),
        "elu": nn.ELU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
    }
    if name == "prelu":
        return lambda channels: nn.PReLU(num_parameters=channels, init=prelu_init)
    if name not in simple:
        raise ValueError(
            f"activation_factory(name={name!r}): choose one of {', '.join(n for n in ACTIVATIONS if n != 'maxout')}"
            " (maxout rewrites layers: use swap_to_maxout or ActivationSwap('maxout'))."
        )
    make = simple[name]
    return lambda channels: make()

