"""A minimal line-plot and image-strip drawer on PIL, for the diagnostics report.

matplotlib is not a dependency of the template (and should not become one for a handful of
report figures); these plots only need axes, a few lines, tick labels, a legend and notes.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    notes: Sequence[str] = (),
    log_y: bool = False,
    size: tuple[int, int] = (720, 420),
) -> Image.Image:
    """Draw `series` (name -> (xs, ys)) as lines; non-finite (and, on a log axis, non-positive)
    points break the line. `notes` are printed under the axes (e.g. the verdicts)."""
    font = _font()
    notes = [piece for note in notes for piece in textwrap.wrap(note, width=max(20, (size[0] - 80) // 6))]
    width, height = size[0], size[1] + 14 * len(notes)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 70, width - 20, 30, size[1] - 40

    def ok(y: float) -> bool:
        return math.isfinite(y) and (y > 0 or not log_y)

    def tr(y: float) -> float:
        return math.log10(y) if log_y else y

    xs_all = [x for xs, ys in series.values() for x, y in zip(xs, ys, strict=True) if ok(y)]
    ys_all = [tr(y) for _, ys in series.values() for y in ys if ok(y)]
    x0, x1 = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    y0, y1 = (min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (tr(y) - y0) / (y1 - y0) * (bottom - top))

    draw.text((left, 8), title, fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline="black")
    for value in _ticks(x0, x1):
        x = left + (value - x0) / (x1 - x0) * (right - left)
        draw.line((x, bottom, x, bottom + 4), fill="black")
        draw.text((x - 12, bottom + 6), f"{value:.4g}", fill="black", font=font)
    for value in _ticks(y0, y1):
        y = bottom - (value - y0) / (y1 - y0) * (bottom - top)
        draw.line((left - 4, y, left, y), fill="black")
        draw.line((left, y, right, y), fill=(230, 230, 230))
        draw.text((4, y - 6), f"{10 ** value if log_y else value:.3g}", fill="black", font=font)
    draw.text(((left + right) // 2 - 3 * len(xlabel), bottom + 20), xlabel, fill="black", font=font)
    draw.text((4, top - 16), ylabel + (" (log)" if log_y else ""), fill="black", font=font)
    for index, (name, (xs, ys)) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        run: list[tuple[float, float]] = []
        for x, y in [*zip(xs, ys, strict=True), (None, float("nan"))]:
            if x is not None and ok(y):
                run.append(px(x, y))
                continue
            if len(run) > 1:
                draw.line(run, fill=color, width=2)
            elif run:
                draw.ellipse((run[0][0] - 2, run[0][1] - 2, run[0][0] + 2, run[0][1] + 2), fill=color)
            run = []
        draw.line((right - 150, top + 10 + 14 * index, right - 130, top + 10 + 14 * index), fill=color, width=2)
        draw.text((right - 125, top + 4 + 14 * index), name[:22], fill="black", font=font)
    for index, note in enumerate(notes):
        draw.text((left, size[1] - 6 + 14 * index), note, fill=(120, 0, 0), font=font)
    return image


def image_strip(images: Sequence[tuple[str, Image.Image]], height: int = 160) -> Image.Image:
    """Images side by side, each scaled to `height` (nearest neighbour, so pixels stay crisp),
    with its caption above."""
    font = _font()
    scaled = [(caption, img.convert("RGB").resize((max(1, img.width * height // img.height), height), Image.NEAREST))
              for caption, img in images]
    width = sum(img.width for _, img in scaled) + 10 * (len(scaled) + 1)
    strip = Image.new("RGB", (max(width, 10), height + 30), "white")
    draw = ImageDraw.Draw(strip)
    x = 10
    for caption, img in scaled:
        draw.text((x, 4), caption, fill="black", font=font)
        strip.paste(img, (x, 20))
        x += img.width + 10
    return strip
