"""E4 — weight averaging through Lightning's own callbacks: the averaged weights are the expected average
of the raw weights, differ from them, and are the ones the model ends with (and is evaluated with)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import EMAWeightAveraging, StochasticWeightAveraging
from tiny import TinyClassifier, loader, quiet_trainer, random_images, tiny_mlp
from torch import nn

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "ensemble"


class TinyNet(TinyClassifier):
    """A linear classifier of 4x4 images that records the weights its validation sees."""

    def __init__(self) -> None:
        super().__init__(tiny_mlp(16, 3, flatten=True), lr=0.5)
        self.val_weights = []

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:  # the weights validation actually sees
            self.val_weights.append(self.net[1].weight.detach().clone())


class WeightProbe(Callback):
    """Raw weights after every optimizer step and at every epoch start (before any callback swaps them)."""

    def __init__(self) -> None:
        self.after_step, self.epoch_start = [], []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.after_step.append(pl_module.net[1].weight.detach().clone())

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_start.append(pl_module.net[1].weight.detach().clone())


def fit(averaging: Callback, max_epochs: int, val: bool = False):
    torch.manual_seed(0)
    data = loader(*random_images(32, side=4))
    model, probe = TinyNet(), WeightProbe()
    trainer = quiet_trainer(callbacks=[probe, averaging], max_epochs=max_epochs, limit_val_batches=1 if val else 0,
                            num_sanity_val_steps=0)
    trainer.fit(model, data, data if val else None)
    return model, probe


def recipe_args(name: str) -> dict:
    (entry,) = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())["trainer"]["callbacks+"]
    return entry["init_args"]


def test_E4_ema_weights_are_the_exponential_average_and_are_what_validation_sees():
    decay = recipe_args("ema")["decay"]
    model, probe = fit(EMAWeightAveraging(decay=decay), max_epochs=3, val=True)
    expected = probe.after_step[0]  # torch's AveragedModel starts from the first step's weights
    for weights in probe.after_step[1:]:
        expected = decay * expected + (1 - decay) * weights
    assert torch.allclose(model.net[1].weight, expected, atol=1e-6)
    assert not torch.allclose(model.net[1].weight, probe.after_step[-1], atol=1e-3)  # not the raw weights
    # Validation after epoch 1 (4 steps) ran with the average of those 4 steps, not the raw weights.
    after_four = probe.after_step[0]
    for weights in probe.after_step[1:4]:
        after_four = decay * after_four + (1 - decay) * weights
    assert torch.allclose(model.val_weights[0], after_four, atol=1e-6)


def test_E4_swa_weights_are_the_mean_of_the_epoch_weights_from_swa_start():
    args = recipe_args("swa")
    assert set(args) >= {"swa_lrs", "swa_epoch_start"}
    max_epochs = 5
    model, probe = fit(StochasticWeightAveraging(**args), max_epochs=max_epochs)
    start = int(args["swa_epoch_start"] * max_epochs) - 1  # Lightning's 0-based first averaged epoch
    # Lightning averages the weights as each epoch from `start` on begins (after the previous epoch's steps).
    expected = torch.stack(probe.epoch_start[start:max_epochs]).mean(dim=0)
    assert len(probe.epoch_start[start:max_epochs]) >= 2
    assert torch.allclose(model.net[1].weight, expected, atol=1e-6)
    assert not torch.allclose(model.net[1].weight, probe.after_step[-1], atol=1e-3)


def test_E4_swa_recipe_updates_batchnorm_statistics_for_the_average():
    """With BatchNorm, SWA runs one extra pass to recompute the running statistics of the averaged weights."""

    class BNNet(TinyNet):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))

    torch.manual_seed(0)
    x, y = random_images(32, side=4)
    model, probe, max_epochs = BNNet(), WeightProbe(), 4
    trainer = quiet_trainer(callbacks=[StochasticWeightAveraging(**recipe_args("swa")), probe], max_epochs=max_epochs)
    trainer.fit(model, loader(x, y))
    start = int(recipe_args("swa")["swa_epoch_start"] * max_epochs) - 1
    assert len(probe.epoch_start) == max_epochs + 1  # one extra epoch, only for the BatchNorm statistics
    averaged = probe.epoch_start[-1]  # the weights of that extra pass (recorded after SWA put the average in)
    assert torch.allclose(averaged, torch.stack(probe.epoch_start[start:max_epochs]).mean(dim=0), atol=1e-6)
    bn = model.net[2]
    with torch.no_grad():  # the statistics of the averaged first layer over the training data
        features = nn.functional.linear(x.flatten(1), averaged, model.net[1].bias)
    assert torch.allclose(bn.running_mean, features.mean(0), atol=1e-4)
    # momentum=None during the pass: a plain average of the 4 batches' (unbiased) variances
    assert torch.allclose(bn.running_var, torch.stack([b.var(0) for b in features.split(8)]).mean(0), atol=1e-4)


@pytest.mark.parametrize("name", ["ema", "swa"])
def test_E4_recipes_name_their_trick(name):
    assert (RECIPES / f"{name}.yaml").read_text().startswith("# E4 — ")
