"""D4 — First-layer filters: an image grid of the first conv's weights per epoch and a noise score.

Lecture: "Visualizing first-layer weights: noisy weights => regularization maybe not strong enough"
(CS231n: well-trained first-layer filters look smooth, like Gabor edges and colour blobs).

Card:
    What: each `every_n_epochs` epochs, draws the first Conv2d's filters as a grid of matplotlib
        `imshow` panels, one per filter (PNG in the run folder `filters/epoch_NNN.png`; a W&B image
        when the logger is W&B) and scores their spatial high-frequency energy; a noisy score names
        weak regularization.
    When it helps: any convnet trained from scratch; pretrained filters should stay smooth.
    Cost: one small grid per epoch (the first layer has few weights).

Why here: Lightning logs no weights as images; torchvision's `make_grid` only draws the grid.

The score, `high_frequency_ratio(weight)`: per filter and input channel, the mean squared
difference between horizontally and vertically adjacent taps, divided by twice the taps' variance;
averaged over filters. White noise gives about 1, a smooth (low-frequency) filter near 0, a
checkerboard 2. Above `noise_threshold` (default 0.8, close to white noise) the filters are noisy.

The verdict abstains on kernels smaller than `min_kernel` (default 5x5): with 3x3 taps there is
hardly any spatial frequency to judge, and useful detectors score like noise there (a 3x3 Laplacian
scores 2.0, white 3x3 noise about 1.2, a Sobel 0.5), so a healthy 3x3 first layer would be called
noisy at every epoch. The grid is still drawn; the finding says why there is no verdict.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import nn
from torchvision.utils import make_grid
from typing_extensions import override

from ..utils.plots import figure, grid_shape, line_plot, to_image
from ._diagnostics import TRY, Finding, Section, announce, run_folder, wandb_logger

__all__ = ["FirstLayerFilters", "filter_grid", "first_conv", "high_frequency_ratio"]

NOISY = ("noisy first-layer filters", "regularization may not be strong enough: increase weight decay or augmentation")
SMOOTH = ("smooth first-layer filters", "regularization looks strong enough")
ABSTAIN_ADVICE = "nothing to fix; look at the grid (the verdict needs filters of {k}x{k} taps or more, e.g. a ResNet's 7x7 stem)"


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The first Conv2d in module order (the layer that sees the pixels)."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


@torch.no_grad()
def high_frequency_ratio(weight: torch.Tensor) -> float:
    """Spatial high-frequency energy of conv filters `(out, in, kh, kw)`: ~1 white noise, ~0 smooth.

    Example:
        >>> smooth = torch.ones(4, 1, 5, 5).cumsum(-1)          # ramps
        >>> noise = torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(0))
        >>> high_frequency_ratio(smooth) < 0.2 < 0.8 < high_frequency_ratio(noise)
        True
    """
    if weight.dim() != 4 or weight.shape[-1] * weight.shape[-2] < 4:
        raise ValueError(f"high_frequency_ratio: need (out, in, kh, kw) filters of at least 2x2 taps, got {tuple(weight.shape)}.")
    w = weight.detach().double().flatten(0, 1)
    pieces = []
    if w.shape[-1] > 1:
        pieces.append((w[..., :, 1:] - w[..., :, :-1]).pow(2).flatten(1))
    if w.shape[-2] > 1:
        pieces.append((w[..., 1:, :] - w[..., :-1, :]).pow(2).flatten(1))
    diff = torch.cat(pieces, dim=1).mean(dim=1)
    var = w.flatten(1).var(dim=1, unbiased=False)
    keep = var > 1e-20  # a constant filter has no spatial structure to judge
    if not keep.any():
        return 0.0
    return (diff[keep] / (2 * var[keep])).mean().item()


@torch.no_grad()
def filter_grid(weight: torch.Tensor, max_filters: int = 64, scale: int = 8) -> torch.Tensor:
    """A (3, H, W) image of the filters, each min-max normalized on its own; 3-channel filters in
    colour, others one grey tile per input channel."""
    w = weight.detach().float().cpu()[:max_filters]
    tiles = w if w.shape[1] == 3 else w.flatten(0, 1).unsqueeze(1)[:max_filters]
    tiles = torch.nn.functional.interpolate(tiles, scale_factor=scale, mode="nearest")
    nrow = max(1, int(len(tiles) ** 0.5 + 0.999))
    return make_grid(tiles, nrow=nrow, padding=2, normalize=True, scale_each=True, pad_value=1.0)


@torch.no_grad()
def _tiles(weight: torch.Tensor, max_filters: int) -> torch.Tensor:
    """(n, H, W, 3 or 1) tiles of the filters in [0, 1], each min-max normalized on its own: 3-channel
    filters in colour, others one grey tile per input channel (as `filter_grid`)."""
    w = weight.detach().float().cpu()[:max_filters]
    tiles = w if w.shape[1] == 3 else w.flatten(0, 1).unsqueeze(1)[:max_filters]
    low = tiles.amin(dim=(1, 2, 3), keepdim=True)
    high = tiles.amax(dim=(1, 2, 3), keepdim=True)
    return ((tiles - low) / (high - low).clamp_min(1e-12)).permute(0, 2, 3, 1)


def filter_figure(weight: torch.Tensor, max_filters: int = 64, scale: int = 8, title: str = "first-layer filters") -> Image.Image:
    """The filters as a near-square grid of `imshow` panels (one per filter, nearest-neighbour
    pixels, each min-max scaled), `scale` screen pixels per tap at least, rendered to a PIL image."""
    tiles = _tiles(weight, max_filters)
    rows, columns = grid_shape(len(tiles))
    tile, gap = max(tiles.shape[2] * scale, 40), 6  # pixels per panel and between panels
    grid_width, grid_height = columns * (tile + gap) - gap, rows * (tile + gap) - gap
    width, height = max(grid_width + 20, 7 * len(title) + 30, 240), grid_height + 46
    fig, axes = figure((width, height), rows, columns, layout=None)
    left = (width - grid_width) / 2 / width  # square cells, the grid centred under the title
    fig.subplots_adjust(left=left, right=1 - left, bottom=10 / height, top=1 - 36 / height,
                        wspace=gap / tile, hspace=gap / tile)
    fig.suptitle(title, y=1 - 8 / height, va="top", fontsize="medium")
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index < len(tiles):
            tile_image = tiles[index].numpy()
            if tile_image.shape[-1] == 1:
                ax.imshow(tile_image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(tile_image, interpolation="nearest")
    return to_image(fig)


def filters_over_epochs(grids: list[tuple[int, torch.Tensor]], title: str, max_filters: int = 64) -> Image.Image:
    """One `imshow` panel per (epoch, filters): each panel the epoch's `filter_grid`."""
    fig, axes = figure((max(190 * len(grids), 8 * len(title) + 40), 280), 1, len(grids))
    fig.suptitle(title)
    for ax, (epoch, weight) in zip(axes.flat, grids, strict=True):
        ax.imshow(filter_grid(weight, max_filters, scale=4).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"epoch {epoch}", fontsize="small")
        ax.set_axis_off()
    return to_image(fig)


class FirstLayerFilters(Callback):
    """Draw and score the first conv layer's filters every `every_n_epochs` epochs (D4).

    Args:
        every_n_epochs: how often (the last epoch is always drawn).
        max_filters: filters drawn per grid.
        scale: screen pixels per filter tap in the PNG's panels (each panel at least 40 pixels).
        noise_threshold: `high_frequency_ratio` above which the filters are called noisy.
        min_kernel: the smallest kernel side with a verdict; smaller kernels are drawn and scored, and the
            finding abstains (3x3 taps carry too few spatial frequencies to tell noise from an edge detector).

    `self.scores` has (epoch, score) per drawing, `self.grids` (epoch, the drawn filters: a CPU copy
    of the first `max_filters` filters' weights), `self.files` the PNGs.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[FirstLayerFilters(every_n_epochs=5)])
    """

    def __init__(self, every_n_epochs: int = 1, max_filters: int = 64, scale: int = 8, noise_threshold: float = 0.8,
                 min_kernel: int = 5) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"FirstLayerFilters(every_n_epochs={every_n_epochs}): use 1 or more.")
        if max_filters < 1:
            raise ValueError(f"FirstLayerFilters(max_filters={max_filters}): use 1 or more, e.g. 64.")
        if scale < 1:
            raise ValueError(f"FirstLayerFilters(scale={scale}): use 1 or more pixels per tap, e.g. 8.")
        if not noise_threshold > 0:
            raise ValueError(f"FirstLayerFilters(noise_threshold={noise_threshold}): must be positive; white noise scores about 1.")
        if min_kernel < 2:
            raise ValueError(f"FirstLayerFilters(min_kernel={min_kernel}): use 2 or more taps per side, e.g. 5.")
        self.every_n_epochs, self.max_filters, self.scale = every_n_epochs, max_filters, scale
        self.min_kernel = min_kernel
        self.kernel: tuple[int, int] | None = None  # (kh, kw) of the first conv, once seen
        self.noise_threshold = noise_threshold
        self.scores: list[tuple[int, float]] = []
        self.grids: list[tuple[int, torch.Tensor]] = []
        self.files: list[Path] = []
        self._warned = False

    def findings(self) -> list[Finding]:
        if not self.scores:
            return []
        epoch, score = self.scores[-1]
        if self.kernel is not None and min(self.kernel) < self.min_kernel:
            kh, kw = self.kernel
            return [Finding("D4", f"no verdict on {kh}x{kw} first-layer filters (high-frequency ratio {score:.2f}): too few "
                                  "taps to tell noise from an edge detector", ABSTAIN_ADVICE.format(k=self.min_kernel),
                            healthy=True)]
        noisy = score > self.noise_threshold
        verdict, advice = NOISY if noisy else SMOOTH
        return [Finding("D4", f"{verdict} (high-frequency ratio {score:.2f}, noisy above {self.noise_threshold})", advice,
                        healthy=not noisy, recipes=TRY["noisy_filters"] if noisy else ())]

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if not trainer.is_global_zero or ((trainer.current_epoch + 1) % self.every_n_epochs and not last):
            return
        conv = first_conv(pl_module)
        if conv is None or conv.weight.shape[-1] * conv.weight.shape[-2] < 4:
            if not self._warned:
                self._warned = True
                announce(trainer, "D4_verdict", Finding("D4", "no first conv layer with at least 2x2 filters",
                                                        "nothing to draw; the diagnostic does nothing for this model"))
            return
        epoch = trainer.current_epoch
        self.kernel = tuple(conv.weight.shape[-2:])
        self.scores.append((epoch, high_frequency_ratio(conv.weight)))
        self.grids.append((epoch, conv.weight.detach()[:self.max_filters].float().cpu().clone()))
        folder, logger = run_folder(trainer), wandb_logger(trainer)
        if folder is not None or logger is not None:
            image = filter_figure(conv.weight, self.max_filters, self.scale,
                                  f"D4 first-layer filters, epoch {epoch} (high-frequency ratio {self.scores[-1][1]:.2f})")
            if folder is not None:  # None under fast_dev_run: nothing is written
                path = folder / "filters" / f"epoch_{epoch:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
                self.files.append(path)
            if logger is not None:
                logger.log_image("diagnose/first_layer_filters", [image], step=trainer.global_step,
                                 caption=[f"epoch {epoch}, high-frequency ratio {self.scores[-1][1]:.2f}"])
        for logger in trainer.loggers:
            logger.log_metrics({"diagnose/filter_high_frequency": self.scores[-1][1]}, step=trainer.global_step)
        announce(trainer, "D4_verdict", self.findings()[0])

    def report_section(self) -> Section:
        images = {}
        if self.grids:
            shown = self.grids if len(self.grids) <= 8 else [self.grids[i * (len(self.grids) - 1) // 7] for i in range(8)]
            images["first_layer_filters"] = filters_over_epochs(shown, "D4 first-layer filters over epochs "
                                                                      "(each filter min-max scaled)", self.max_filters)
            epochs = [e for e, _ in self.scores]
            series = {"high-frequency ratio": (epochs, [s for _, s in self.scores])}
            if self.kernel is None or min(self.kernel) >= self.min_kernel:  # no threshold line where there is no verdict
                series["noisy above"] = (epochs, [self.noise_threshold] * len(self.scores))
            images["filter_noise"] = line_plot(series, "D4 first-layer filter noise (1 = white noise, 0 = smooth)", "epoch",
                                               "ratio", notes=[f.line() for f in self.findings()])
        lines = [f"Grids drawn: {len(self.grids)}" + (f"; PNGs in `{self.files[0].parent}`." if self.files else ".")]
        return Section("First-layer filters (D4)", self.findings(), lines, images)
