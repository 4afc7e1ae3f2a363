"""R1 — L2 penalty: before the optimizer step every covered gradient has gained exactly λ·w; biases
and norm layers are left out when asked; the recipe turns the optimizer's weight_decay off."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnn_tricks.callbacks.weight_penalties import L2Penalty, penalized_parameters

from conftest import offline_env

LAMBDA = 0.01


class TinyNet(LightningModule):
    def __init__(self, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
        self.weight_decay = weight_decay

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, weight_decay=self.weight_decay)


class GradProbe(Callback):
    """Records every parameter's gradient (and value) when its turn in on_before_optimizer_step comes."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}
        self.weights: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters()}
        self.weights = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


def gradients_around(penalty) -> tuple[GradProbe, GradProbe]:
    """Gradients just before and just after the penalty callback, at the same step."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    before, after = GradProbe(), GradProbe()
    trainer = Trainer(max_steps=1, callbacks=[before, penalty, after], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(TinyNet(), DataLoader(data, batch_size=8))
    return before, after


def test_R1_gradient_gains_exactly_lambda_w_and_excluded_params_are_unaffected():
    before, after = gradients_around(L2Penalty(weight=LAMBDA, exclude_bias_and_norm=True))
    covered = {"net.0.weight", "net.4.weight"}
    for name, grad in before.grads.items():
        gained = after.grads[name] - grad
        if name in covered:
            assert torch.allclose(gained, LAMBDA * before.weights[name], atol=1e-7), name
        else:  # conv/linear biases and BatchNorm weight/bias
            assert torch.equal(gained, torch.zeros_like(gained)), name


def test_R1_without_exclusion_biases_and_norm_layers_gain_lambda_w_too():
    before, after = gradients_around(L2Penalty(weight=LAMBDA, exclude_bias_and_norm=False))
    for name, grad in before.grads.items():
        assert torch.allclose(after.grads[name] - grad, LAMBDA * before.weights[name], atol=1e-7), name


def test_R1_penalized_parameters_leave_out_biases_and_norm_layers():
    names = [n for n, _ in penalized_parameters(TinyNet())]
    assert names == ["net.0.weight", "net.4.weight"]


def test_R1_warns_when_the_optimizer_also_decays_the_weights():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    trainer = Trainer(max_steps=1, callbacks=[L2Penalty(weight=LAMBDA)], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.warns(UserWarning, match="L2 is applied twice"):
        trainer.fit(TinyNet(weight_decay=5e-4), DataLoader(data, batch_size=8))


def test_R1_recipe_turns_the_optimizers_weight_decay_off(project, home):
    """The recipe merges over configs/default.yaml: same SGD, weight_decay 0, the callback appended."""
    cmd = [sys.executable, "-m", "tricks_check", "fit", "--config", "configs/default.yaml",
           "--config", "recipes/regularize/l2.yaml", "--print_config"]
    printed = subprocess.run(cmd, cwd=project, env=offline_env(home, project), capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr[-3000:]
    config = yaml.safe_load(printed.stdout)
    optimizer = config["model"]["optimizer"]
    assert optimizer["class_path"] == "torch.optim.SGD" and optimizer["init_args"]["weight_decay"] == 0.0
    assert optimizer["init_args"]["lr"] == 0.1 and optimizer["init_args"]["momentum"] == 0.9
    callbacks = [c["class_path"].rsplit(".", 1)[-1] for c in config["trainer"]["callbacks"]]
    assert len(callbacks) > 1 and callbacks[-1] == "L2Penalty"  # appended after the default config's callbacks


def test_R1_weight_must_be_positive():
    with pytest.raises(ValueError, match="weight=0"):
        L2Penalty(weight=0)
