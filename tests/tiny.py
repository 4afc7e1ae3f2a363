"""Tiny nets, data and quiet Trainers shared by the effect tests (conftest.py holds the project helpers).

Nothing here seeds: the random helpers draw from torch's global generator, so a test seeds first and
keeps the order of its draws (data, then model, or the other way round) as its numbers depend on it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

QUIET = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
         "enable_model_summary": False}


def quiet_trainer(tmp_path=None, callbacks: Iterable[Callback] = (), **overrides) -> Trainer:
    """A Trainer on the CPU with no logger, no checkpointing, no progress bar and no model summary; what it
    writes goes under `tmp_path`. Any Trainer argument in `overrides` wins: `logger=CSVLogger(...)`,
    `enable_checkpointing=True` beside a ModelCheckpoint, `accelerator="auto"` for whatever device the
    machine has."""
    return Trainer(**{"default_root_dir": tmp_path, **QUIET, "callbacks": list(callbacks), **overrides})


class TinyClassifier(LightningModule):
    """`net` trained with cross-entropy and SGD, `val/loss` logged in validation.

    `net` may also be a dict of named parts, run in order and kept under their names (a test that looks
    for `backbone.0` or excludes `head` keeps them). `scheduler(optimizer)`, when given, is the LR scheduler."""

    def __init__(self, net: nn.Module | dict[str, nn.Module], *, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, scheduler: Callable | None = None,
                 example_input: torch.Tensor | None = None) -> None:
        super().__init__()
        parts = net if isinstance(net, dict) else {"net": net}
        for name, part in parts.items():
            self.add_module(name, part)
        self.parts = list(parts)
        self.lr, self.momentum, self.weight_decay, self.scheduler = lr, momentum, weight_decay, scheduler
        self.example_input_array = example_input

    def forward(self, x):
        for name in self.parts:
            x = getattr(self, name)(x)
        return x

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer)}


def tiny_convnet(*channels: int, batch_norm: bool = False, act: Callable[[], nn.Module] = nn.ReLU, side: int = 8,
                 classes: int = 3) -> nn.Sequential:
    """On 1-channel `side` x `side` images: a 3x3 'same' conv per entry of `channels` (each followed by
    BatchNorm when asked, then `act`), flattened into a linear classifier."""
    layers, width = [], 1
    for out in channels:
        layers += [nn.Conv2d(width, out, 3, padding=1), *([nn.BatchNorm2d(out)] if batch_norm else []), act()]
        width = out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * side * side, classes))


def tiny_mlp(*sizes: int, act: Callable[[], nn.Module] = nn.ReLU, flatten: bool = False) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, `act` after each but the last (a Flatten first if asked)."""
    layers = [nn.Flatten()] if flatten else []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [nn.Linear(fan_in, fan_out), act()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def digits_convnet(pkg, widths=(8, 16), image_size: int = 8, lr: float = 0.1, weight_decay: float = 5e-4):
    """The project's ImageClassifier as the D* diagnostics train it: a sized convnet of one conv per stage,
    SGD with Nesterov momentum."""
    return pkg.ImageClassifier(image_size=image_size, backbone_options={"widths": list(widths), "convs_per_stage": 1},
                               optimizer=partial(torch.optim.SGD, lr=lr, momentum=0.9, nesterov=True,
                                                 weight_decay=weight_decay))


def random_images(n: int, side: int = 8, classes: int = 3, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` 1-channel images of N(0, scale²) pixels and labels below `classes`, drawn in that order."""
    return torch.randn(n, 1, side, side) * scale, torch.randint(0, classes, (n,))


def loader(*tensors: torch.Tensor, batch_size: int = 8) -> DataLoader:
    """The tensors as a dataset, in order, in batches of `batch_size`."""
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size)


def random_loader(n: int, side: int = 8, classes: int = 3, scale: float = 1.0, batch_size: int = 8) -> DataLoader:
    return loader(*random_images(n, side, classes, scale), batch_size=batch_size)


def digits_data(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` of sklearn's 8x8 digits (all 1797 by default): float32 rows of 64 pixels in 0..16, labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data[:n], dtype=torch.float32), torch.tensor(digits.target[:n])


class BatchLRs(Callback):
    """The LR of the first parameter group at the start of every training batch."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
