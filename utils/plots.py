"""Shared matplotlib helpers of the diagnostics, the LR finder and the studies (no trick of its own).

Figures are built on `matplotlib.figure.Figure` and rendered by the Agg canvas: no display is needed
and pyplot's global state is never touched, so the callbacks are safe in any process (workers, DDP
ranks, notebooks). `to_image` turns a figure into the PIL image that the callbacks save as PNG and
send to W&B/TensorBoard. matplotlib is imported when a figure is drawn, not when the package is.

`__all__` is empty on purpose: these functions are helpers, not config classes for the CLI.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__: list[str] = []

DPI = 100


def figure(size: tuple[int, int] = (720, 420), nrows: int = 1, ncols: int = 1, layout: str | None = "constrained",
           **subplots_kw) -> tuple[Figure, np.ndarray]:
    """A `size`-pixel figure (width, height) with an `nrows` x `ncols` array of axes (always 2-D)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout=layout, facecolor="white")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **subplots_kw)


def to_image(fig: Figure) -> Image.Image:
    """Render `fig` with the Agg canvas into an RGB PIL image of the figure's pixel size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def draw_lines(
    ax: Axes,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    notes: Sequence[str] = (),
    log_y: bool = False,
    wrap: int = 100,
) -> None:
    """Draw `series` (name -> (xs, ys)) as lines on `ax`, with title, axis labels, a legend outside
    the axes on the right, and `notes` (e.g. the verdicts) in dark red under the x label.

    Non-finite points (and, on a log axis, non-positive ones) break the line; a point with no
    neighbour to join is drawn as a dot. Integer x values (steps, epochs) get integer ticks."""
    from matplotlib.ticker import MaxNLocator

    all_x: list[float] = []
    any_positive = False
    for name, (xs, ys) in series.items():
        x = np.asarray(list(xs), dtype=float)
        y = np.asarray(list(ys), dtype=float)
        ok = np.isfinite(y) & np.isfinite(x) & ((y > 0) if log_y else True)
        y = np.where(ok, y, np.nan)
        any_positive |= bool(np.any(ok & (y > 0)))
        all_x += x[ok].tolist()
        label = "\n".join(textwrap.wrap(name, 32)) or name
        (line,) = ax.plot(x, y, label=label, linewidth=1.6, marker="o" if len(x) <= 15 else None, markersize=3.5)
        prev = np.concatenate([[False], ok[:-1]])
        nxt = np.concatenate([ok[1:], [False]])
        lonely = ok & ~prev & ~nxt
        if lonely.any() and len(x) > 15:
            ax.plot(x[lonely], y[lonely], "o", color=line.get_color(), markersize=3.5)
    if log_y and any_positive:
        ax.set_yscale("log")
    finite = [float(v) for _, ys in series.values() for v in ys if math.isfinite(float(v))]
    if not log_y and finite and min(finite) == max(finite) >= 0:
        # A flat line at v >= 0 (e.g. no dead units at all): an axis from 0, not matplotlib's v ± 0.04 around it.
        ax.set_ylim(0, 2 * finite[0] if finite[0] > 0 else 1.0)
    if all_x and all(float(v).is_integer() for v in all_x):
        if len(set(all_x)) == 1:  # one epoch/step: a single tick, not fractions around it
            ax.set_xticks(sorted(set(all_x)))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    if not all_x:
        ax.text(0.5, 0.5, "no finite values to plot", transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (log scale)" if log_y and any_positive else ""))
    ax.grid(True, which="major", alpha=0.3)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small",
                  ncols=1 + (len(series) - 1) // 20)
    lines = [piece for note in notes for piece in textwrap.wrap(note, wrap)]
    if lines:
        ax.annotate("\n".join(lines), xy=(0.0, 0.0), xycoords=("axes fraction", ax.xaxis.label), xytext=(0, -6),
                    textcoords="offset points", ha="left", va="top", fontsize="small", color="darkred")


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    notes: Sequence[str] = (),
    log_y: bool = False,
    size: tuple[int, int] = (720, 420),
) -> Image.Image:
    """One line plot (see `draw_lines`) rendered as a PIL image; the figure grows by a line of
    height per wrapped note line."""
    wrap = max(40, size[0] // 7)
    count = sum(len(textwrap.wrap(note, wrap)) for note in notes)
    fig, axes = figure((size[0], size[1] + 14 * count + (10 if count else 0)))
    draw_lines(axes[0, 0], series, title, xlabel, ylabel, notes, log_y, wrap)
    return to_image(fig)


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid holding `count` panels."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return max(1, math.ceil(count / columns)), columns
