"""Activation surgery: replace every activation module of any backbone, in place (F1–F7's mechanism).

Used by the `ActivationSwap` callback (callbacks/activation_swap.py); usable on any `nn.Module`.

Channels. PReLU needs each call site's channel count. A shape probe (one no-grad forward of
    `example_input` in eval mode; the callback uses `pl_module.example_input_array`) records the
    input of every activation call; without an example input the count comes from the last
    Conv/Linear/BatchNorm before the activation in module order.
Shared modules. torchvision ResNet blocks call one `self.relu` two (BasicBlock) or three
    (Bottleneck) times, with different channel counts in a Bottleneck. A parameter-free
    replacement stays shared, as in the original. A replacement with parameters becomes a
    `CallSiteActivations` holding one module per call (found by the probe): each call site
    learns its own slopes. It dispatches by call order, reset whenever its owner block starts a
    forward.
Maxout. `Conv2d/Linear -> [BatchNorm] -> act` becomes `Conv2d/Linear(k*C) -> [BatchNorm(k*C)] ->
    Maxout(k)`: the max comes after BatchNorm, so at inference (BN folded into each piece) every
    unit is exactly Goodfellow's max of k affine pieces and the next layer still sees C channels.
    Piece 0 of each unit keeps the old layer's weights (and BN statistics); the other pieces are
    freshly initialized. An activation that does not follow its own layer inside an
    nn.Sequential (ResNet blocks: ReLU after a residual add, reused module) raises a ValueError
    naming the module and the backbone; nothing is changed then.
PReLU slopes are parameters: an optimizer's weight decay pulls them to 0 (the PReLU paper uses
    none on them).

`__all__` is empty on purpose: these are functions and helper modules, not config classes for the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..utils.probe import probe_forward
from .activations import DEFAULT_TARGETS, Factory
from .maxout import Maxout

__all__: list[str] = []

_WIDENABLE = (nn.Conv2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class CallSiteActivations(nn.Module):
    """One activation module per call site of a module that its owner calls several times per forward.

    The i-th call during one forward of the owner goes to `sites[i]`; the owner resets the counter at
    the start of each of its forwards (a forward pre-hook set by `swap_activations`).

    Example:
        >>> act = CallSiteActivations([nn.PReLU(4), nn.PReLU(8)])
        >>> act(torch.zeros(1, 4)).shape, act(torch.zeros(1, 8)).shape
        (torch.Size([1, 4]), torch.Size([1, 8]))
    """

    def __init__(self, sites: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(sites) < 2:
            raise ValueError(f"CallSiteActivations(sites=<{len(sites)} modules>): needs 2 or more, one per call.")
        self.sites = nn.ModuleList(sites)
        self.next_site = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        site = self.sites[self.next_site]
        self.next_site = (self.next_site + 1) % len(self.sites)
        return site(x)


def _reset_call_sites(owner: nn.Module, args) -> None:
    # A module-level function (not a closure), so deepcopy and pickling of the model keep working.
    for child in owner.children():
        if isinstance(child, CallSiteActivations):
            child.next_site = 0


def _references(model: nn.Module, targets: tuple[type[nn.Module], ...]) -> dict[int, list[tuple[nn.Module, str, str]]]:
    """id(activation) -> every (parent, attribute, qualified name) that holds it, in module order."""
    found: dict[int, list[tuple[nn.Module, str, str]]] = {}
    for parent_name, parent in model.named_modules(remove_duplicate=True):
        for attr, child in parent.named_children():
            if isinstance(child, targets) and not isinstance(child, CallSiteActivations):
                found.setdefault(id(child), []).append((parent, attr, f"{parent_name}.{attr}".lstrip(".")))
    return found


def _channels(module: nn.Module, args: tuple[Any, ...], output: Any) -> int:
    x = args[0]
    return int(x.shape[1]) if x.dim() >= 2 else 1


def _probe(model: nn.Module, modules: dict[int, nn.Module], example_input: torch.Tensor | None) -> dict[int, list[int]]:
    """Run one eval-mode forward and record, per module, the channel count of each call in order."""
    calls: dict[int, list[int]] = {key: [] for key in modules}
    if example_input is None:
        return calls
    parameter = next(model.parameters(), None)
    if parameter is not None:
        example_input = example_input.to(parameter.device)
    # eval: no BatchNorm statistics updates, and a batch of 1 is fine
    for key, channels in probe_forward(model, example_input, modules, _channels, pre=True):
        calls[key].append(channels)
    return calls


def _channels_in_module_order(model: nn.Module) -> dict[int, int]:
    """Fallback without a probe: the output width of the last Conv/Linear/norm layer before each module."""
    channels, last = {}, None
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            last = module.out_channels
        elif isinstance(module, nn.Linear):
            last = module.out_features
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            last = module.num_features
        elif isinstance(module, nn.GroupNorm):
            last = module.num_channels
        elif last is not None:
            channels[id(module)] = last
    return channels


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _reference_tensor(*modules: nn.Module) -> torch.Tensor | None:
    """The first floating parameter or buffer of the first module that has one (gives device and dtype)."""
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                return tensor
    return None


def _like(new: nn.Module, *references: nn.Module) -> nn.Module:
    """Put `new` on the device and dtype of the first reference module with tensors."""
    reference = _reference_tensor(*references)
    return new if reference is None else new.to(device=reference.device, dtype=reference.dtype)


def swap_activations(
    model: nn.Module,
    factory: Factory,
    example_input: torch.Tensor | None = None,
    targets: tuple[type[nn.Module], ...] = DEFAULT_TARGETS,
) -> int:
    """Replace every activation module of a type in `targets` by `factory(channels)`.

    Args:
        model: any nn.Module (a backbone, a LightningModule).
        factory: `channels -> module`, e.g. `activation_factory("prelu")`.
        example_input: a batch for the shape probe; needed for exact channels and for per-call-site
            modules when one activation module is called several times (ResNets).
        targets: activation classes to replace.

    Returns:
        The number of activation modules replaced (a shared module counts once).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU())
        >>> swap_activations(net, activation_factory("tanh"))
        2
        >>> net[1]
        Tanh()
    """
    references = _references(model, targets)
    modules = {key: refs[0][0].get_submodule(refs[0][1]) for key, refs in references.items()}
    calls = _probe(model, modules, example_input)
    fallback = _channels_in_module_order(model)
    plans = []  # built in full before anything is replaced, so an error leaves the model as it was
    for key, refs in references.items():
        old = modules[key]
        sites = calls[key] or [fallback.get(key)]
        new_modules = [_like(factory(1 if channels is None else channels), old, model) for channels in sites]
        if None in sites and _has_state(new_modules[0]):
            raise ValueError(
                f"swap_activations: cannot tell the channel count of {refs[0][2]} ({type(old).__name__}): no "
                "Conv/Linear/BatchNorm precedes it and no example_input was given; pass example_input."
            )
        if len(new_modules) == 1 or not any(_has_state(m) for m in new_modules):
            plans.append((refs, new_modules[0]))  # a parameter-free module can stay shared, as the original
        else:
            plans.append((refs, CallSiteActivations(new_modules)))
    for refs, replacement in plans:
        for parent, attr, _ in refs:
            setattr(parent, attr, replacement)
            if isinstance(replacement, CallSiteActivations) and _reset_call_sites not in parent._forward_pre_hooks.values():
                parent.register_forward_pre_hook(_reset_call_sites)
    return len(references)


def _widen(layer: nn.Module, pieces: int) -> nn.Module:
    """A copy of Conv2d/Linear/BatchNorm with `pieces` times the outputs; piece 0 of each unit keeps the old values."""
    if isinstance(layer, nn.Conv2d):
        wide = nn.Conv2d(layer.in_channels, layer.out_channels * pieces, layer.kernel_size, layer.stride, layer.padding,
                         layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode)
    elif isinstance(layer, nn.Linear):
        wide = nn.Linear(layer.in_features, layer.out_features * pieces, layer.bias is not None)
    else:
        wide = type(layer)(layer.num_features * pieces, layer.eps, layer.momentum, layer.affine,
                           layer.track_running_stats)
    wide = _like(wide, layer)
    with torch.no_grad():
        if isinstance(layer, _NORMS):
            # Per-channel statistics and affine: every piece starts with its unit's values.
            for name in ("weight", "bias", "running_mean", "running_var"):
                old, new = getattr(layer, name), getattr(wide, name)
                if old is not None and new is not None:
                    new.copy_(old.repeat_interleave(pieces))
        else:
            wide.weight.unflatten(0, (-1, pieces))[:, 0].copy_(layer.weight)
            if layer.bias is not None:
                wide.bias.unflatten(0, (-1, pieces))[:, 0].copy_(layer.bias)
    return wide


def swap_to_maxout(
    model: nn.Module,
    pieces: int = 2,
    example_input: torch.Tensor | None = None,
    targets: tuple[type[nn.Module], ...] = DEFAULT_TARGETS,
) -> int:
    """Rewrite every `Conv2d/Linear -> [BatchNorm] -> activation` of `model` into its maxout form (F7).

    Returns the number of activations replaced. Raises ValueError, changing nothing, when an
    activation does not follow its own Conv2d/Linear inside an nn.Sequential.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        >>> swap_to_maxout(net, pieces=3), net[0].out_features, net[2]
        (1, 24, Maxout(pieces=3))
    """
    if not isinstance(pieces, int) or pieces < 2:
        raise ValueError(f"swap_to_maxout(pieces={pieces}): maxout needs an integer of at least 2 pieces, e.g. 2.")
    references = _references(model, targets)
    modules = {key: refs[0][0].get_submodule(refs[0][1]) for key, refs in references.items()}
    calls = _probe(model, modules, example_input)
    plans, problems = [], []
    for key, refs in references.items():
        parent, attr, name = refs[0]
        owner = type(parent).__name__
        if len(refs) > 1 or len(calls[key]) > 1:
            problems.append(f"{name} is one module used {max(len(refs), len(calls[key]))} times (in {owner})")
            continue
        if not isinstance(parent, nn.Sequential):
            problems.append(f"{name} is called from {owner}.forward, not inside an nn.Sequential")
            continue
        index = list(parent._modules).index(attr)  # position, also for named children (OrderedDict)
        norm = parent[index - 1] if index >= 1 and isinstance(parent[index - 1], _NORMS) else None
        layer_index = index - 2 if norm is not None else index - 1
        layer = parent[layer_index] if layer_index >= 0 else None
        if not isinstance(layer, _WIDENABLE) or (isinstance(layer, nn.Conv2d) and layer.groups != 1):
            problems.append(f"{name} does not follow a Conv2d (groups=1) or Linear [+ BatchNorm] in {owner}")
            continue
        if norm is not None and norm.num_features != (layer.out_channels if isinstance(layer, nn.Conv2d)
                                                      else layer.out_features):
            problems.append(f"{name}: the BatchNorm before it does not match the layer before that")
            continue
        plans.append((parent, layer_index, norm is not None, index))
    if problems:
        raise ValueError(
            f"Maxout cannot rewrite {type(model).__name__}: " + "; ".join(problems[:3])
            + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            + ". Maxout needs every activation right after its own Conv2d/Linear (optionally + BatchNorm) inside "
            "an nn.Sequential, as in the sized_convnet backbone: use that backbone or another activation."
        )
    for parent, layer_index, has_norm, index in plans:
        parent[layer_index] = _widen(parent[layer_index], pieces)
        if has_norm:
            parent[layer_index + 1] = _widen(parent[layer_index + 1], pieces)
        parent[index] = Maxout(pieces)
    return len(plans)

