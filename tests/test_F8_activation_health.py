"""F8 — activation health: dead ReLUs, saturated tanh/sigmoid, symmetric (zero-init) units, sampled every N steps."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning import seed_everything
from tiny import TinyClassifier, digits_data, loader, quiet_trainer, tiny_mlp
from torch import nn

from cnn_tricks.callbacks.activation_health import ActivationHealth, activation_stats


def mlp(net: nn.Module) -> TinyClassifier:
    return TinyClassifier(net, lr=0.01)


def digits_batches():
    x, y = digits_data(256)
    return loader(x / 8 - 1, y, batch_size=32)


def health(net: nn.Module, every: int = 2, steps: int = 5) -> ActivationHealth:
    seed_everything(0, verbose=False)
    monitor = ActivationHealth(every_n_steps=every)
    quiet_trainer(callbacks=[monitor], max_steps=steps).fit(mlp(net), digits_batches())
    return monitor


def layers(*, act=nn.ReLU, depth: int = 2, width: int = 32) -> nn.Sequential:
    torch.manual_seed(0)
    return tiny_mlp(64, *[width] * depth, 10, act=act)


def sources(monitor: ActivationHealth) -> list[str]:
    return [f"{f.source}: {f.verdict}" for f in monitor.findings() if not f.healthy]


def test_F8_forced_dead_layer_reports_all_units_dead():
    healthy = health(layers())
    net = layers()
    with torch.no_grad():
        net[0].bias.fill_(-100.0)  # every pre-activation far below zero: the first ReLU never fires
    dead = health(net)
    print("healthy:", sources(healthy), "| forced dead:", sources(dead))
    assert dead.samples[-1]["layers"]["net.1"]["dead"] == 1.0
    assert healthy.samples[-1]["layers"]["net.1"]["dead"] < 0.2
    assert any("dead ReLUs" in s and "net.1 100%" in s for s in sources(dead))
    assert sources(healthy) == [] and healthy.findings()[0].healthy
    # sampled on steps 0, 2, 4 only, and no hook is left behind
    assert [s["step"] for s in dead.samples] == [0, 2, 4]
    assert all(not m._forward_hooks for m in net.modules())


def test_F8_saturated_tanh_and_deep_sigmoid_are_reported():
    tanh = layers(act=nn.Tanh)
    with torch.no_grad():
        tanh[0].weight.mul_(100.0)  # huge pre-activations: tanh pinned at +-1
    deep_sigmoid = layers(act=nn.Sigmoid, depth=8)
    with torch.no_grad():
        for layer in deep_sigmoid:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0.0, 1.0)  # the naive N(0, 1) init
    plain_tanh = health(layers(act=nn.Tanh))
    saturated, sigmoid = health(tanh), health(deep_sigmoid)
    print("tanh x100:", sources(saturated), "| deep sigmoid:", sources(sigmoid), "| plain tanh:", sources(plain_tanh))
    assert saturated.samples[-1]["layers"]["net.1"]["saturated"] > 0.9
    assert plain_tanh.samples[-1]["layers"]["net.1"]["saturated"] < 0.1
    assert any("saturated sigmoid/tanh" in s for s in sources(saturated))
    assert any("saturated sigmoid/tanh" in s for s in sources(sigmoid))
    assert "never sigmoid" in next(f.advice for f in sigmoid.findings() if "saturated" in f.verdict)


def test_F8_zero_initialized_net_is_symmetric_and_dead():
    net = layers(depth=3)
    for param in net.parameters():
        nn.init.zeros_(param)
    monitor = health(net, every=1, steps=2)
    found = sources(monitor)
    print("zero init:", found)
    assert any(s.startswith("I1: symmetric units") for s in found)
    assert any("dead ReLUs" in s for s in found)


def test_F8_gradient_norms_per_layer_and_vanishing_signal():
    small = layers(act=nn.Tanh, depth=6)
    with torch.no_grad():
        for layer in small:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0.0, 0.001)  # I2: 0.001 * N(0, 1)
    monitor = health(small, every=10, steps=1)
    grads = monitor.samples[0]["grads"]
    print({k: f"{v:.2e}" for k, v in grads.items()})
    assert list(grads) == [f"net.{i}" for i in range(0, 14, 2)]
    assert any("vanishing gradients" in s for s in sources(monitor))


def test_F8_hooks_only_on_sampled_steps():
    """The cost stays small because only every N-th step is hooked (the timing benchmark is in test_D_training_report)."""
    calls = []
    monitor = ActivationHealth(every_n_steps=3)
    original = monitor._stats  # what the hooks record at each activation call

    def counting(module, inputs, output):
        calls.append(module)
        return original(module, inputs, output)

    monitor._stats = counting
    seed_everything(0, verbose=False)
    model = mlp(layers())
    quiet_trainer(callbacks=[monitor], max_steps=7).fit(model, digits_batches())
    assert [s["step"] for s in monitor.samples] == [0, 3, 6]
    names = {module: name for name, module in model.named_modules()}
    assert [names[m] for m in calls] == ["net.1", "net.3"] * 3  # one forward per sampled step, none elsewhere
    assert not any(m._forward_hooks for m in model.modules())  # and no hook left behind


def test_F8_stats_and_arguments():
    stats = activation_stats(torch.tensor([[0.0, 1.0], [0.0, 2.0]]), nn.ReLU())
    assert stats["dead"] == 0.5 and stats["symmetric"] == 0.0
    assert activation_stats(torch.full((4, 3), 0.999), nn.Sigmoid())["saturated"] == 1.0
    with pytest.raises(ValueError, match="every_n_steps=0"):
        ActivationHealth(every_n_steps=0)
