"""Probe a model on one batch: forward hooks on chosen modules, one eval-mode no-grad forward, hooks removed.

Several callbacks look inside the model this way before or during training: the activation swap
(channel count of every activation call), the size check (every leaf layer's input and output shape),
LSUV (the order the layers run in, then one layer's output std), the stage probe (each stage's
width); the activation-health diagnostic keeps hooks for one training step. They share these pieces:

- `ForwardHooks`: forward (or forward-pre) hooks on a mapping `key -> module` that record
  `(key, record(module, inputs, output))` per call, in call order; removed by `remove()` or on leaving
  a `with` block, also when the forward raised.
- `eval_mode`: the model in eval mode inside (no dropout, no BatchNorm statistics updated, a batch of
  one is fine); every module's own training flag restored afterwards, also on error.
- `probe_forward`: both around one `torch.no_grad()` forward of a batch; returns the records.

`__all__` is empty on purpose: these are helpers, not config classes for the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__: list[str] = []

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
# record(module, inputs, output) -> what to keep for that call; `output` is None for pre-hooks.
Record = Callable[[nn.Module, tuple[Any, ...], Any], T]


def _nothing(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
    return None


class ForwardHooks(Generic[K, T]):
    """Hooks on `modules` that append `(key, record(module, inputs, output))` to `records` at every call.

    Args:
        modules: `key -> module` (a mapping or (key, module) pairs); a module called several times
            records once per call.
        record: what to keep of one call; by default nothing (None), so `records` gives only the
            order of the calls.
        pre: forward-pre hooks (they see the inputs before the module runs; `output` is None).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        >>> with ForwardHooks({"fc": net[0]}, lambda m, i, o: tuple(o.shape)) as hooks:
        ...     _ = net(torch.zeros(2, 4))
        >>> hooks.records
        [('fc', (2, 3))]
    """

    def __init__(
        self,
        modules: Mapping[K, nn.Module] | Iterable[tuple[K, nn.Module]],
        record: Record[T] = _nothing,
        pre: bool = False,
    ) -> None:
        self.records: list[tuple[K, T]] = []
        self._handles: list[RemovableHandle] = []
        pairs = modules.items() if isinstance(modules, Mapping) else modules
        try:
            for key, module in pairs:
                if pre:
                    self._handles.append(module.register_forward_pre_hook(self._pre_hook(key, record)))
                else:
                    self._handles.append(module.register_forward_hook(self._hook(key, record)))
        except BaseException:
            self.remove()
            raise

    def _hook(self, key: K, record: Record[T]) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self.records.append((key, record(module, inputs, output)))

        return hook

    def _pre_hook(self, key: K, record: Record[T]) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            self.records.append((key, record(module, inputs, None)))

        return hook

    def remove(self) -> None:
        """Remove every hook (a second call does nothing); `records` stays."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> ForwardHooks[K, T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model.eval()` inside the block; every module's own training flag as it was afterwards, even on error."""
    flags = {module: module.training for module in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for module, flag in flags.items():
            module.training = flag


def probe_forward(
    model: nn.Module,
    batch: Any,
    modules: Mapping[K, nn.Module] | Iterable[tuple[K, nn.Module]],
    record: Record[T] = _nothing,
    pre: bool = False,
) -> list[tuple[K, T]]:
    """Run `model(batch)` once in eval mode under `torch.no_grad()` with `ForwardHooks(modules, record, pre)`;
    the hooks are removed and the training flags restored afterwards, even on error.

    Returns `(key, record(module, inputs, output))` of every hooked call, in call order. `batch` is
    passed as it is (put it on the model's device first).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Dropout(), nn.MaxPool2d(2)).train()
        >>> probe_forward(net, torch.zeros(1, 1, 8, 8), {"pool": net[2]}, lambda m, i, o: tuple(o.shape))
        [('pool', (1, 4, 4, 4))]
        >>> net.training
        True
    """
    with ForwardHooks(modules, record, pre) as hooks, eval_mode(model), torch.no_grad():
        model(batch)
    return hooks.records
