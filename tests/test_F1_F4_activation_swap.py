"""F1–F4 — activation swap: every activation of the backbone (sized convnet and resnet18) replaced, and still trains."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
from tiny import digits_data, quiet_trainer, random_loader
from torch import nn

from cnn_tricks.callbacks.activation_swap import ActivationSwap
from cnn_tricks.layers.activation_surgery import swap_activations, swap_to_maxout
from cnn_tricks.layers.activations import ACTIVATIONS, activation_factory
from cnn_tricks.layers.maxout import Maxout
from cnn_tricks.layers.xu_rrelu import XuRReLU

EXPECTED = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "prelu": nn.PReLU,
            "rrelu": XuRReLU, "maxout": Maxout, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


@pytest.fixture(scope="module")
def backbones(pkg):
    return importlib.import_module(f"{pkg.__name__}.backbones")


def swap(model: nn.Module, name: str, example: torch.Tensor) -> int:
    if name == "maxout":
        return swap_to_maxout(model, 2, example)
    return swap_activations(model, activation_factory(name), example)


def activation_calls(model: nn.Module, kind: type[nn.Module], x: torch.Tensor) -> int:
    """How many times modules of `kind` run in one forward (every call site counts)."""
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules() if isinstance(m, kind)]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_F1_F4_every_activation_of_the_sized_convnet_is_replaced(backbones, one_thread, name):
    torch.manual_seed(0)
    net = backbones.build_backbone("sized_convnet", 1, 10, 16, widths=[8, 16])
    x = torch.randn(4, 1, 16, 16)
    originals = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    calls_before = activation_calls(net, nn.ReLU, x)
    assert swap(net, name, x[:1]) == len(originals) == calls_before == 4
    assert not any(m is o for m in net.modules() for o in originals)  # no original module left
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == (len(originals) if name == "relu" else 0)
    assert sum(type(m) is EXPECTED[name] for m in net.modules()) == len(originals)
    assert activation_calls(net, EXPECTED[name], x) == calls_before  # the new modules are the ones that run
    assert net(x).shape == (4, 10)


@pytest.fixture(scope="module")
def resnet18(backbones):
    torch.manual_seed(0)
    return backbones.build_backbone("resnet18", 1, 10, 8)  # built once (its init is the slow part), copied per test


@pytest.mark.parametrize("name", ["sigmoid", "leaky_relu", "prelu"])
def test_F1_F4_every_call_site_of_resnet18_runs_the_new_activation(resnet18, one_thread, name):
    net = copy.deepcopy(resnet18)
    x = torch.randn(2, 1, 8, 8)
    modules = sum(isinstance(m, nn.ReLU) for m in net.modules())
    call_sites = activation_calls(net, nn.ReLU, x)
    assert (modules, call_sites) == (9, 17)  # the stem's ReLU plus one ReLU called twice per BasicBlock
    assert swap(net, name, x[:1]) == modules
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())
    assert activation_calls(net, EXPECTED[name], x) == call_sites
    assert net.train()(x).shape == (2, 10)


def test_F4_leaky_relu_uses_the_configured_slope():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    swap_activations(net, activation_factory("leaky_relu", negative_slope=0.2))
    assert net[1](torch.tensor([-5.0, 5.0])).tolist() == pytest.approx([-1.0, 5.0])


def train_on_digits(backbones, name: str, steps: int = 25) -> list[float]:
    """Full-batch Adam on 256 digits (8x8) with a 2-stage sized convnet whose activations are `name`."""
    images, labels = digits_data(256)
    images = images.view(-1, 1, 8, 8) / 16.0
    torch.manual_seed(0)
    net = backbones.build_backbone("sized_convnet", 1, 10, 8, widths=[8, 16], convs_per_stage=1)
    swap(net, name, images[:1])
    optimizer = torch.optim.Adam(net.parameters(), lr=0.03)
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {steps} steps")
    return losses


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_F1_F4_swapped_model_still_trains_on_digits(backbones, one_thread, name):
    losses = train_on_digits(backbones, name)
    assert losses[-1] < 0.8 * losses[0]


def test_F3_relu_converges_much_faster_than_sigmoid(backbones, one_thread):
    # The lecture: ReLU "converges much faster than sigmoid/tanh in practice"; "never use sigmoid".
    relu, sigmoid = train_on_digits(backbones, "relu"), train_on_digits(backbones, "sigmoid")
    assert relu[-1] < 0.25 * sigmoid[-1]


def test_F1_F4_callback_swaps_once_and_refuses_a_second_activation(pkg):
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=8, backbone_options={"widths": [8]})
    ActivationSwap("tanh").setup(None, model, "fit")
    first = [m for m in model.modules() if isinstance(m, nn.Tanh)]
    ActivationSwap("tanh").setup(None, model, "test")  # fit then test on the same module: no second surgery
    assert [m for m in model.modules() if isinstance(m, nn.Tanh)] == first and len(first) == 2
    with pytest.raises(ValueError, match="already swapped to 'tanh'"):
        ActivationSwap("gelu").setup(None, model, "fit")


def test_F1_F4_callback_arguments_are_validated():
    with pytest.raises(ValueError, match="activation='swish'"):
        ActivationSwap("swish")
    with pytest.raises(ValueError, match="negative_slope=-0.1"):
        ActivationSwap("leaky_relu", negative_slope=-0.1)
    with pytest.raises(ValueError, match="maxout_pieces=1"):
        ActivationSwap("maxout", maxout_pieces=1)
    with pytest.raises(ValueError, match=r"lower=8.0, upper=3.0"):
        ActivationSwap("rrelu", rrelu_lower=8.0, rrelu_upper=3.0)
    with pytest.raises(ValueError, match="has no activation module"):
        ActivationSwap("gelu").setup(None, nn.Sequential(nn.Linear(2, 2)), "fit")


def test_F1_F4_a_checkpoint_is_tested_with_its_own_activation_only(pkg, tmp_path, one_thread):
    loader = random_loader(8, classes=10, batch_size=4)

    def model():
        return pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=8, backbone_options={"widths": [4]})

    trainer = quiet_trainer(callbacks=[ActivationSwap("tanh")], max_steps=1)
    trainer.fit(model(), train_dataloaders=loader)
    trainer.save_checkpoint(tmp_path / "tanh.ckpt")
    quiet_trainer(callbacks=[ActivationSwap("tanh")]).test(model(), loader, ckpt_path=tmp_path / "tanh.ckpt", verbose=False)
    # Same parameter names, so the weights would load silently: the callback's saved state catches it.
    with pytest.raises(ValueError, match="trained with 'tanh'.*recipes/activation/tanh.yaml"):
        quiet_trainer(callbacks=[ActivationSwap("gelu")]).test(model(), loader, ckpt_path=tmp_path / "tanh.ckpt")


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "leaky_relu", "prelu", "gelu"])
def test_F1_F5_sized_convnet_is_built_with_its_activation_no_surgery_needed(backbones, name):
    """Our own backbone takes the activation as an argument; the swap is for backbones we do not own."""
    net = backbones.SizedConvNet(in_channels=1, num_classes=10, widths=(8, 16), convs_per_stage=1, activation=name)
    expected = type(activation_factory(name)(8))
    acts = [m for m in net.modules() if isinstance(m, (nn.ReLU, expected))]
    assert len(acts) == 2 and all(type(m) is expected for m in acts)
    if name == "prelu":
        assert [m.num_parameters for m in acts] == [8, 16]  # one slope per channel of its conv
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match="activation='maxout'.*recipe activation/maxout"):
        backbones.SizedConvNet(in_channels=1, num_classes=10, activation="maxout")
