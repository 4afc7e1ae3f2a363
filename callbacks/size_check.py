"""T1 — Size check: the layer-by-layer shape table at fit start, with warnings on broken sizing rules.

Lecture: "Sizing: start with an image that has a power-of-2 size; conv layers 3×3, stride 1, pad 1, so
[W1, H1, D1] -> [W1, H1, D2] (spatial size exactly preserved); pool layers 2×2 (more = worse)."

Card:
    What: one forward pass of the model's `example_input_array` (or `input_shape`) with a hook on
        every leaf layer; prints the shape table, logs it (W&B / TensorBoard text, and
        `size_check.txt` in the run folder) and warns, naming the layer, when
        - the input's height or width is not a power of 2,
        - a stride-1 conv shrinks the map (padding too small, e.g. a 3×3 conv without padding),
        - a pool gets an odd-sized map and drops its last row/column.
    When it helps: before a long run on a new input size or a hand-written backbone.
    Cost: one forward pass of one example, once.

Why here: Lightning's ModelSummary lists in/out sizes but does not check the rules, and does not
log the table to the experiment tracker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from ..utils.probe import probe_forward
from ._diagnostics import run_folder

__all__ = ["SizeCheck", "shape_table", "size_warnings", "format_table"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


@dataclass
class Row:
    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    module: nn.Module


def _shape(value) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return tuple(value[0].shape)
    return ()


def _shapes(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return _shape(inputs), _shape(output)


def shape_table(model: nn.Module, example: torch.Tensor) -> list[Row]:
    """Run `example` through `model` in eval mode and record every leaf layer's input and output shape."""
    leaves = {name: module for name, module in model.named_modules() if next(module.children(), None) is None and name}
    # eval: no BatchNorm statistics updated, no dropout
    calls = probe_forward(model, example, leaves, _shapes)
    return [Row(name, type(leaves[name]).__name__, inputs, output, leaves[name]) for name, (inputs, output) in calls]


def _is_power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _pair(value, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def size_warnings(rows: list[Row], input_shape: tuple[int, ...]) -> list[str]:
    """Warnings for every broken sizing rule, each naming the layer."""
    messages = []
    spatial = input_shape[2:]
    if spatial and not all(_is_power_of_2(s) for s in spatial):
        first = next((r.name for r in rows if len(r.input_shape) == len(input_shape)), "the first layer")
        side = "x".join(map(str, spatial))
        messages.append(
            f"SizeCheck: the input {side} seen by layer '{first}' is not a power of 2 in every side: halved by 2x2 pools "
            "it turns odd after a few stages, and a pool then drops its last row/column. Resize to a power of 2 (e.g. data.image_size=32 or 64)."
        )
    for row in rows:
        m, sin, sout = row.module, row.input_shape[2:], row.output_shape[2:]
        if not sin or len(sin) != len(sout):
            continue
        if isinstance(m, _CONVS) and all(s == 1 for s in _pair(m.stride, len(sin))) and any(o < i for i, o in zip(sin, sout, strict=True)):
            messages.append(
                f"SizeCheck: layer '{row.name}' ({row.kind}, kernel {m.kernel_size}, padding {m.padding}) shrinks the map "
                f"{'x'.join(map(str, sin))} -> {'x'.join(map(str, sout))}: use padding=(kernel_size - 1) // 2 "
                "(1 for a 3x3) to keep W x H, and shrink with pools."
            )
        if isinstance(m, _POOLS) and any(i % 2 for i in sin) and any(o * 2 < i for i, o in zip(sin, sout, strict=True)):
            messages.append(
                f"SizeCheck: layer '{row.name}' ({row.kind}) pools an odd-sized map {'x'.join(map(str, sin))} -> "
                f"{'x'.join(map(str, sout))} and drops its last row/column: use a power-of-2 input."
            )
    return messages


def format_table(rows: list[Row]) -> str:
    """A fixed-width text table: layer, type, input shape, output shape."""
    header = ("layer", "type", "input", "output")
    cells = [(r.name, r.kind, "x".join(map(str, r.input_shape[1:])), "x".join(map(str, r.output_shape[1:]))) for r in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *cells]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class SizeCheck(Callback):
    """Print, log and check the layer-by-layer shape table at fit start (T1).

    Args:
        input_shape: (C, H, W) of one example when the module has no `example_input_array`
            (`protocol.TrickModule`).
        save: also write the table to `size_check.txt` in the run's folder (`_diagnostics.run_folder`:
            the logger's save_dir/name/version, the default root dir without a logger; nothing
            under fast_dev_run).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[SizeCheck()])
    """

    def __init__(self, input_shape: list[int] | None = None, save: bool = True) -> None:
        if input_shape is not None and (len(input_shape) < 2 or any(int(s) < 1 for s in input_shape)):
            raise ValueError(f"SizeCheck(input_shape={input_shape}): give one example's (C, H, W) with positive sizes, e.g. [3, 32, 32].")
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.save = save
        self.rows: list[Row] = []
        self.warnings: list[str] = []
        self.table = ""

    def check(self, model: nn.Module, example: torch.Tensor) -> str:
        """Fill `rows`, `warnings` and `table` for `example`; returns the table."""
        self.rows = shape_table(model, example)
        self.warnings = size_warnings(self.rows, tuple(example.shape))
        self.table = format_table(self.rows)
        return self.table

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        example = getattr(pl_module, "example_input_array", None)
        if self.input_shape is not None:
            example = torch.zeros(1, *self.input_shape)
        if not isinstance(example, torch.Tensor):  # a diagnostic never stops a run
            rank_zero_warn(
                f"SizeCheck: {type(pl_module).__name__} has no tensor example_input_array, so no shape table; "
                "pass SizeCheck(input_shape=[C, H, W])."
            )
            return
        self.check(pl_module, example[:1].to(pl_module.device))
        rank_zero_info(f"SizeCheck: layer-by-layer shapes (one example)\n{self.table}")
        for message in self.warnings:
            rank_zero_warn(message)
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if hasattr(logger, "log_text"):  # W&B: a table
                columns = ["layer", "type", "input", "output"]
                data = [[r.name, r.kind, str(r.input_shape[1:]), str(r.output_shape[1:])] for r in self.rows]
                logger.log_text(key="size_check", columns=columns, data=data)
            elif hasattr(getattr(logger, "experiment", None), "add_text"):  # TensorBoard
                logger.experiment.add_text("size_check", f"```\n{self.table}\n```")
        folder = run_folder(trainer)
        if self.save and folder is not None:  # None under fast_dev_run: nothing is written
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "size_check.txt").write_text(self.table + "\n" + "".join(f"\n{w}" for w in self.warnings) + "\n")
