"""R1 — L2 penalty: before the optimizer step every covered gradient has gained exactly λ·w; biases
and norm layers are left out when asked; the recipe turns the optimizer's weight_decay off."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from pytorch_lightning import Callback
from tiny import TinyClassifier, quiet_trainer, random_loader, tiny_convnet

from cnn_tricks.callbacks.weight_penalties import L2Penalty, penalized_parameters

from conftest import offline_env

LAMBDA = 0.01


def tiny_net(weight_decay: float = 0.0) -> TinyClassifier:
    """A one-conv BatchNorm net (weights net.0 and net.4; biases and BatchNorm besides), SGD at 0.1."""
    return TinyClassifier(tiny_convnet(4, batch_norm=True), lr=0.1, weight_decay=weight_decay)


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
    data = random_loader(8)
    before, after = GradProbe(), GradProbe()
    quiet_trainer(callbacks=[before, penalty, after], max_steps=1).fit(tiny_net(), data)
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
    names = [n for n, _ in penalized_parameters(tiny_net())]
    assert names == ["net.0.weight", "net.4.weight"]


def test_R1_warns_when_the_optimizer_also_decays_the_weights():
    torch.manual_seed(0)
    data = random_loader(8)
    trainer = quiet_trainer(callbacks=[L2Penalty(weight=LAMBDA)], max_steps=1)
    with pytest.warns(UserWarning, match="L2 is applied twice"):
        trainer.fit(tiny_net(weight_decay=5e-4), data)


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
