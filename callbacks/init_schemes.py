"""I1–I4 — Weight initialization schemes, applied at fit start (one family, one core).

    I1 — All-zero (or constant) initialization: the lecture's counter-example, every unit stays identical.
    I2 — Small random numbers: w = 0.001·N(0, 1) (or uniform); the signal shrinks layer after layer.
    I3 — Calibrated variances: w = randn(n) / sqrt(n), n = fan-in; output variance stays put.
    I4 — He initialization: weight variance 2/n (n = fan-in), for ReLU nets.
    I3/I4 extra — Orthogonal initialization: each layer's weight matrix a (scaled) orthogonal one.

Which layers an init scheme touches, and when:
    - Conv1d/2d/3d and Linear layers (weights by the scheme, biases to zero); norm layers, PReLU
      slopes and everything else keep their own defaults.
    - Never a layer loaded from pretrained weights: a backbone builder marks such modules with the
      attribute `PRETRAINED_ATTR` (the generated `backbones.py` does it for torchvision weights),
      and any module name starting with one of `exclude` is skipped too (use it for weights you
      load yourself).
    - Nothing at all when the LightningModule says its weights were loaded (`pretrained_source`,
      set by the project's ImageClassifier for `pretrained_checkpoint`) but no layer is marked.
    - Once, at fit start, and never on resume: when `trainer.ckpt_path` is set the checkpoint's
      weights are the ones to keep.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
import torch.distributed as dist
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

__all__ = ["CalibratedInit", "HeInit", "OrthogonalInit", "SmallRandomInit", "ZeroInit", "calibrated_init_", "he_init_", "orthogonal_init_", "small_random_init_", "zero_init_"]


# Set (to the weights' name, e.g. "DEFAULT") on every module a backbone builder loaded from
# pretrained weights; the generated `backbones.py` writes the same literal.
PRETRAINED_ATTR = "pretrained_weights"


INIT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def is_pretrained(module: nn.Module) -> bool:
    return getattr(module, PRETRAINED_ATTR, None) is not None


def init_targets(model: nn.Module, exclude: Sequence[str] = (), skip_pretrained: bool = True) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every Conv/Linear layer an init scheme may touch, in registration order."""
    targets = []
    for name, module in model.named_modules():
        if not isinstance(module, INIT_LAYERS):
            continue
        if any(name == prefix or name.startswith(prefix + ".") for prefix in exclude):
            continue
        if skip_pretrained and is_pretrained(module):
            continue
        targets.append((name, module))
    return targets


@torch.no_grad()
def apply_init(
    model: nn.Module,
    init_weight: Callable[[torch.Tensor], object],
    exclude: Sequence[str] = (),
    skip_pretrained: bool = True,
    bias: float = 0.0,
) -> list[str]:
    """Initialize every target layer's weight with `init_weight(weight)` (in place) and its bias
    with the constant `bias`; returns the names of the layers touched."""
    names = []
    for name, layer in init_targets(model, exclude, skip_pretrained):
        init_weight(layer.weight)
        if layer.bias is not None:
            layer.bias.fill_(bias)
        names.append(name)
    return names


def check_exclude(owner: str, exclude: Iterable[str] | None) -> list[str]:
    exclude = list(exclude or [])
    if any(not isinstance(p, str) or not p for p in exclude):
        raise ValueError(f"{owner}(exclude={exclude}): give module-name prefixes as non-empty strings, e.g. ['backbone.fc'].")
    return exclude


class InitCallback(Callback):
    """Base of the init callbacks: applies `self.initialize(model)` once at fit start, on every
    rank the same weights (rank 0's are broadcast), and never when resuming from a checkpoint.

    Init runs in `on_fit_start`, after Lightning has restored a checkpoint (so `trainer.ckpt_path`
    tells a resume from a fresh run); strategies that restore only after setup (DeepSpeed) load
    the checkpoint's weights over the init anyway.

    Reads the module's `pretrained_source` and its layers' `pretrained_weights` (`protocol.TrickModule`).
    """

    def __init__(self, exclude: Sequence[str] | None = None, skip_pretrained: bool = True) -> None:
        self.exclude = check_exclude(type(self).__name__, exclude)
        self.skip_pretrained = skip_pretrained
        self.initialized: list[str] = []
        self._done: set[int] = set()

    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        name = type(self).__name__
        if trainer.ckpt_path:
            rank_zero_info(f"{name}: resuming from {trainer.ckpt_path}; the checkpoint's weights are kept (no re-init).")
            return
        if id(pl_module) in self._done:  # a second fit() of the same model continues its training
            return
        source = getattr(pl_module, "pretrained_source", None)
        if source and self.skip_pretrained and not any(is_pretrained(m) for m in pl_module.modules()):
            # The project's ImageClassifier records where its weights came from (e.g. a
            # pretrained_checkpoint) without saying which layers were loaded: keep them all.
            rank_zero_warn(
                f"{name}: the model's weights come from {source}, and no layer is marked as loaded "
                f"(attribute {PRETRAINED_ATTR!r}), so nothing is re-initialized. Mark the loaded layers, "
                f"or pass {name}(skip_pretrained=False, exclude=[...]) to init the others."
            )
            self._done.add(id(pl_module))
            return
        self.initialized = self.initialize(pl_module, trainer)
        if dist.is_available() and dist.is_initialized():
            # Random init (and LSUV's per-rank batch) differ between ranks; rank 0's weights win.
            with torch.no_grad():
                for layer in (m for _, m in init_targets(pl_module, self.exclude, self.skip_pretrained)):
                    for param in layer.parameters(recurse=False):
                        dist.broadcast(param.data, src=0)
        self._done.add(id(pl_module))
        rank_zero_info(f"{name}: initialized {len(self.initialized)} Conv/Linear layers.")


# --------------------------------------------------------------------------------------------------
# I1 — All-zero (or constant) initialization: the lecture's counter-example, every unit stays identical.
#
# Lecture: "Initialization: How about all zero initialization?" (CS231n notes): if every weight is the
# same, every unit of a layer computes the same output, gets the same gradient and the same update,
# so the units never become different ("symmetry is never broken").
#
# Card:
#     What: every Conv/Linear weight set to `value` (0 by default), biases to 0.
#     When it helps: never for hidden layers; it is here to show why random init is needed
#         (zero-initializing only a final layer can be fine, use `exclude` for the others).
#     Cost: none.
#
# Why here: `torch.nn.init.zeros_`/`constant_` do the filling; the callback adds the scope rules
# (skip pretrained layers, no re-init on resume) and the warning.


SYMMETRY_WARNING = (
    "ZeroInit(value={value}): every unit of a layer starts with the same weights, so all units compute the same "
    "output and get the same gradient: the symmetry is never broken and the units of each hidden layer will stay "
    "identical for the whole training. Use a random init (recipes/init/he.yaml) to train for real."
)


def zero_init_(model: nn.Module, value: float = 0.0, exclude: Sequence[str] = (), skip_pretrained: bool = True) -> list[str]:
    """Set every target Conv/Linear weight to `value` and bias to 0; returns the layer names."""
    return apply_init(model, lambda w: nn.init.constant_(w, value), exclude, skip_pretrained)


class ZeroInit(InitCallback):
    """Initialize every Conv/Linear layer to a constant (0 by default) at fit start (I1); warns.

    Args:
        value: the constant; any constant shows the same symmetry, 0 is the lecture's case.
        exclude: module-name prefixes to leave alone (e.g. `["backbone.fc"]`).
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[ZeroInit()])
    """

    def __init__(self, value: float = 0.0, exclude: Sequence[str] | None = None, skip_pretrained: bool = True) -> None:
        super().__init__(exclude, skip_pretrained)
        if not torch.isfinite(torch.tensor(float(value))):
            raise ValueError(f"ZeroInit(value={value}): use a finite constant, e.g. 0.0.")
        self.value = float(value)

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        names = zero_init_(model, self.value, self.exclude, self.skip_pretrained)
        if names:
            warnings.warn(SYMMETRY_WARNING.format(value=self.value), UserWarning, stacklevel=2)
        return names


# --------------------------------------------------------------------------------------------------
# I2 — Small random numbers: w = 0.001·N(0, 1) (or uniform); the signal shrinks layer after layer.
#
# Lecture: "We still want the weights to be very close to 0 ... Warning! Small numbers will diminish the
# 'gradient signal' flowing backward through a network" (CS231n notes).
#
# Card:
#     What: every Conv/Linear weight drawn from scale·N(0, 1) (or U(-scale, scale)), biases 0.
#     When it helps: shallow nets; in a deep net each layer multiplies the activation (and gradient)
#         scale by about scale·sqrt(fan_in), so both vanish with depth (the test shows it).
#     Cost: none.
#
# Why here: `torch.nn.init.normal_`/`uniform_` draw the numbers; the callback adds the scope rules
# (skip pretrained layers, no re-init on resume).


DISTRIBUTIONS = ("normal", "uniform")  # of SmallRandomInit and HeInit
Distribution = Literal["normal", "uniform"]


def small_random_init_(
    model: nn.Module,
    scale: float = 0.001,
    distribution: Distribution = "normal",
    exclude: Sequence[str] = (),
    skip_pretrained: bool = True,
) -> list[str]:
    """Draw every target weight from scale·N(0, 1) or U(-scale, scale); biases 0. Returns the layer names."""
    if distribution == "normal":
        return apply_init(model, lambda w: nn.init.normal_(w, 0.0, scale), exclude, skip_pretrained)
    return apply_init(model, lambda w: nn.init.uniform_(w, -scale, scale), exclude, skip_pretrained)


class SmallRandomInit(InitCallback):
    """Initialize every Conv/Linear layer with small random numbers at fit start (I2).

    Args:
        scale: 0.001 in the lecture; the std of the normal, or the half-width of the uniform.
        distribution: "normal" or "uniform".
        exclude: module-name prefixes to leave alone.
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[SmallRandomInit(scale=0.001)])
    """

    def __init__(
        self,
        scale: float = 0.001,
        distribution: Distribution = "normal",
        exclude: Sequence[str] | None = None,
        skip_pretrained: bool = True,
    ) -> None:
        super().__init__(exclude, skip_pretrained)
        if not scale > 0:
            raise ValueError(f"SmallRandomInit(scale={scale}): use a positive scale, e.g. 0.001.")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"SmallRandomInit(distribution={distribution!r}): choose one of {', '.join(DISTRIBUTIONS)}.")
        self.scale = scale
        self.distribution = distribution

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        return small_random_init_(model, self.scale, self.distribution, self.exclude, self.skip_pretrained)


# --------------------------------------------------------------------------------------------------
# I3 — Calibrated variances: w = randn(n) / sqrt(n), n = fan-in; output variance stays put.
#
# Lecture: "Calibrating the variances with 1/sqrt(n)" (CS231n notes; LeCun et al. 1998, the "Xavier"
# fan-in form of Glorot & Bengio 2010): a unit's output variance grows with its number of inputs,
# so dividing by sqrt(fan_in) keeps it equal to the input variance in a linear (or tanh) stack.
#
# Card:
#     What: every Conv/Linear weight drawn from N(0, 1/fan_in) (fan_in = in_channels·kh·kw), biases 0.
#     When it helps: linear, tanh and sigmoid nets. With ReLU each layer halves the variance; use He
#         init (I4) there (the I4 test shows a 30-layer ReLU net that does not train with this one).
#     Cost: none.
#
# Why here: it is `torch.nn.init.kaiming_normal_(w, nonlinearity="linear")` (gain 1); the callback
# adds the scope rules (skip pretrained layers, no re-init on resume).


def calibrated_init_(model: nn.Module, exclude: Sequence[str] = (), skip_pretrained: bool = True) -> list[str]:
    """Draw every target weight from N(0, 1/fan_in); biases 0. Returns the layer names."""
    return apply_init(model, lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="linear"), exclude, skip_pretrained)


class CalibratedInit(InitCallback):
    """Initialize every Conv/Linear layer with randn/sqrt(fan_in) at fit start (I3).

    Args:
        exclude: module-name prefixes to leave alone.
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[CalibratedInit()])
    """

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        return calibrated_init_(model, self.exclude, self.skip_pretrained)


# --------------------------------------------------------------------------------------------------
# I4 — He initialization: weight variance 2/n (n = fan-in), for ReLU nets.
#
# Lecture: "They reached the conclusion that the variance of neurons in the network should be 2.0/n"
# (He et al. 2015, Delving Deep into Rectifiers): ReLU zeroes half of its inputs, so the weights
# need twice the calibrated variance to keep the activation scale from layer to layer; a 30-layer
# plain ReLU net converges with it and stalls with the 1/n ("Xavier") init.
#
# Card:
#     What: every Conv/Linear weight drawn from N(0, 2/fan_in) (or the uniform with the same
#         variance; fan_out mode keeps the backward signal instead), biases 0.
#     When it helps: deep ReLU-family nets without (or before) BatchNorm.
#     Cost: none.
#
# Why here: it is `torch.nn.init.kaiming_normal_/kaiming_uniform_`; the callback adds the scope
# rules (skip pretrained layers, no re-init on resume). torch's own default for Conv/Linear is a
# uniform with variance 1/(3·fan_in), a third of the calibrated one, not He.


MODES = ("fan_in", "fan_out")
Mode = Literal["fan_in", "fan_out"]


def he_init_(
    model: nn.Module,
    mode: Mode = "fan_in",
    distribution: Distribution = "normal",
    negative_slope: float = 0.0,
    exclude: Sequence[str] = (),
    skip_pretrained: bool = True,
) -> list[str]:
    """Draw every target weight with variance 2/((1 + a²)·n); biases 0. Returns the layer names."""
    nonlinearity = "relu" if negative_slope == 0 else "leaky_relu"
    fill = nn.init.kaiming_normal_ if distribution == "normal" else nn.init.kaiming_uniform_
    return apply_init(model, lambda w: fill(w, a=negative_slope, mode=mode, nonlinearity=nonlinearity), exclude, skip_pretrained)


class HeInit(InitCallback):
    """Initialize every Conv/Linear layer with He's sqrt(2/fan_in) scale at fit start (I4).

    Args:
        mode: "fan_in" (keeps the forward activations' variance, the lecture's n) or "fan_out".
        distribution: "normal" or "uniform" (same variance).
        negative_slope: the Leaky ReLU/PReLU slope a; the variance becomes 2/((1 + a²)·n).
        exclude: module-name prefixes to leave alone.
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[HeInit()])
    """

    def __init__(
        self,
        mode: Mode = "fan_in",
        distribution: Distribution = "normal",
        negative_slope: float = 0.0,
        exclude: Sequence[str] | None = None,
        skip_pretrained: bool = True,
    ) -> None:
        super().__init__(exclude, skip_pretrained)
        if mode not in MODES:
            raise ValueError(f"HeInit(mode={mode!r}): choose one of {', '.join(MODES)}.")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"HeInit(distribution={distribution!r}): choose one of {', '.join(DISTRIBUTIONS)}.")
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"HeInit(negative_slope={negative_slope}): use the activation's slope in [0, 1), 0 for ReLU.")
        self.mode = mode
        self.distribution = distribution
        self.negative_slope = negative_slope

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        return he_init_(model, self.mode, self.distribution, self.negative_slope, self.exclude, self.skip_pretrained)


# --------------------------------------------------------------------------------------------------
# I3/I4 extra — Orthogonal initialization: each layer's weight matrix a (scaled) orthogonal one.
#
# Saxe et al. 2014 (Exact solutions to the nonlinear dynamics of learning in deep linear networks):
# an orthogonal matrix keeps every direction's norm, not only the average variance, so a deep
# linear stack neither shrinks nor blows up any input; a gain of sqrt(2) does the same for ReLU.
#
# Card:
#     What: every Conv/Linear weight, flattened to (out, in·kh·kw), set to gain × a random
#         (semi-)orthogonal matrix; biases 0.
#     When it helps: very deep or recurrent-like stacks without normalization; LSUV starts from it.
#     Cost: one QR decomposition per layer, once.
#
# Why here: it is `torch.nn.init.orthogonal_`; the callback adds the scope rules (skip pretrained
# layers, no re-init on resume).


def orthogonal_init_(model: nn.Module, gain: float = 1.0, exclude: Sequence[str] = (), skip_pretrained: bool = True) -> list[str]:
    """Set every target weight to gain × a random (semi-)orthogonal matrix; biases 0. Returns the layer names."""
    return apply_init(model, lambda w: nn.init.orthogonal_(w, gain=gain), exclude, skip_pretrained)


class OrthogonalInit(InitCallback):
    """Initialize every Conv/Linear layer with a scaled random orthogonal matrix at fit start.

    Args:
        gain: 1.0 for linear/tanh stacks, sqrt(2) ≈ 1.414 for ReLU.
        exclude: module-name prefixes to leave alone.
        skip_pretrained: leave layers loaded from pretrained weights alone.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[OrthogonalInit(gain=1.414)])
    """

    def __init__(self, gain: float = math.sqrt(2.0), exclude: Sequence[str] | None = None, skip_pretrained: bool = True) -> None:
        super().__init__(exclude, skip_pretrained)
        if not gain > 0:
            raise ValueError(f"OrthogonalInit(gain={gain}): use a positive gain, 1.0 (linear/tanh) or 1.414 (ReLU).")
        self.gain = gain

    @override
    def initialize(self, model: nn.Module, trainer: Trainer | None = None) -> list[str]:
        return orthogonal_init_(model, self.gain, self.exclude, self.skip_pretrained)
