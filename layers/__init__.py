"""Network layers (nn.Module subclasses) the tricks add: Maxout, Xu et al.'s randomized ReLU, the activation table.

`activation_surgery` rewrites an existing network's activations in place; the `ActivationSwap` callback and
`SizedConvNet(activation=...)` are its users. Every module lists its public classes in `__all__`.
"""

from .maxout import Maxout, MaxoutConv2d, MaxoutLinear, maxout
from .xu_rrelu import XuRReLU

__all__ = ["Maxout", "MaxoutConv2d", "MaxoutLinear", "XuRReLU", "maxout"]
