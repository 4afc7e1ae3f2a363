"""F7 — Maxout: each unit outputs max(w1·x + b1, ..., wk·x + bk), in conv and linear forms.

Lecture: "Maxout 'Neuron'" (Goodfellow et al. 2013, Maxout Networks): generalizes ReLU and Leaky ReLU,
has a linear regime, does not saturate, does not die; doubles the parameters (k times for k pieces).

Card:
    What: a layer with k times the output units of the plain layer, followed by a max over each group
        of k consecutive units (`Maxout`), so the output has the plain layer's width.
    When it helps: with dropout (the paper's pairing); as a drop-in for ReLU where dead units hurt.
    Cost: k times the parameters and the multiply-adds of the layer it replaces.

Why here: neither torch nor Lightning has a maxout layer. Layout: unit c's pieces are the channels
c*k ... c*k + k - 1 of the widened layer, so `x.unflatten(1, (C, k)).amax(2)` takes the max.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Maxout", "MaxoutConv2d", "MaxoutLinear", "maxout"]


def _check_pieces(owner: str, pieces: int) -> None:
    if not isinstance(pieces, int) or pieces < 2:
        raise ValueError(f"{owner}(pieces={pieces}): maxout needs an integer of at least 2 pieces, e.g. 2.")


def maxout(x: torch.Tensor, pieces: int) -> torch.Tensor:
    """Max over groups of `pieces` consecutive channels (dim 1): (N, C*k, ...) -> (N, C, ...)."""
    if x.shape[1] % pieces:
        raise ValueError(f"maxout: {x.shape[1]} channels cannot be split into groups of pieces={pieces}.")
    return x.unflatten(1, (x.shape[1] // pieces, pieces)).amax(dim=2)


class Maxout(nn.Module):
    """The maxout nonlinearity on its own: max over groups of `pieces` channels (dim 1).

    Put it after a layer with `pieces` times the wanted output channels; `ActivationSwap("maxout")`
    does exactly that to a backbone.

    Example:
        >>> Maxout(pieces=2)(torch.tensor([[1.0, -3.0, 0.5, 2.0]]))
        tensor([[1., 2.]])
    """

    def __init__(self, pieces: int = 2) -> None:
        super().__init__()
        _check_pieces("Maxout", pieces)
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maxout(x, self.pieces)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


class MaxoutLinear(nn.Module):
    """Linear maxout layer: out_features units, each the max of `pieces` affine functions of the input.

    `self.linear` holds the k pieces (out_features * pieces rows), so the parameter count is k times
    that of `nn.Linear(in_features, out_features)`.

    Example:
        >>> layer = MaxoutLinear(4, 3, pieces=2)
        >>> layer(torch.zeros(5, 4)).shape, sum(p.numel() for p in layer.parameters())
        (torch.Size([5, 3]), 30)
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2, bias: bool = True) -> None:
        super().__init__()
        _check_pieces("MaxoutLinear", pieces)
        self.pieces = pieces
        self.linear = nn.Linear(in_features, out_features * pieces, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maxout(self.linear(x), self.pieces)


class MaxoutConv2d(nn.Module):
    """2-D conv maxout layer: out_channels maps, each the pixelwise max of `pieces` convolutions.

    Takes `nn.Conv2d`'s arguments; `self.conv` holds the k pieces (out_channels * pieces filters),
    so the parameter count is k times that of the plain `nn.Conv2d`.

    Example:
        >>> layer = MaxoutConv2d(1, 8, kernel_size=3, padding=1, pieces=2)
        >>> layer(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], pieces: int = 2,
                 **conv_options) -> None:
        super().__init__()
        _check_pieces("MaxoutConv2d", pieces)
        self.pieces = pieces
        self.conv = nn.Conv2d(in_channels, out_channels * pieces, kernel_size, **conv_options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maxout(self.conv(x), self.pieces)
