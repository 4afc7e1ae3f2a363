"""F7 — Maxout: output equals the max of the k pieces; parameter count k times the plain layer; backbone rewrite."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_tricks.callbacks.activation_swap import ActivationSwap
from cnn_tricks.layers.activation_surgery import swap_to_maxout
from cnn_tricks.layers.maxout import Maxout, MaxoutConv2d, MaxoutLinear


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("pieces", [2, 3])
def test_F7_linear_output_is_the_max_of_the_pieces_and_has_k_times_the_parameters(pieces):
    torch.manual_seed(0)
    layer, x = MaxoutLinear(5, 4, pieces=pieces), torch.randn(7, 5)
    weight, bias = layer.linear.weight, layer.linear.bias
    outputs = torch.stack([F.linear(x, weight[j::pieces], bias[j::pieces]) for j in range(pieces)])  # w_j.x + b_j
    assert torch.allclose(layer(x), outputs.amax(dim=0), atol=1e-6)
    assert not torch.allclose(layer(x), outputs[0])  # the max really picks among the pieces
    assert count(layer) == pieces * count(nn.Linear(5, 4))


@pytest.mark.parametrize("pieces", [2, 3])
def test_F7_conv_output_is_the_max_of_the_pieces_and_has_k_times_the_parameters(pieces):
    torch.manual_seed(0)
    layer, x = MaxoutConv2d(2, 3, kernel_size=3, padding=1, pieces=pieces), torch.randn(2, 2, 6, 6)
    weight, bias = layer.conv.weight, layer.conv.bias
    outputs = torch.stack([F.conv2d(x, weight[j::pieces], bias[j::pieces], padding=1) for j in range(pieces)])
    assert layer(x).shape == (2, 3, 6, 6)
    assert torch.allclose(layer(x), outputs.amax(dim=0), atol=1e-6)
    assert count(layer) == pieces * count(nn.Conv2d(2, 3, kernel_size=3, padding=1))


def test_F7_sized_convnet_rewrite_doubles_conv_and_bn_and_takes_the_max_after_bn(pkg):
    backbones = importlib.import_module(f"{pkg.__name__}.backbones")
    torch.manual_seed(0)
    net = backbones.build_backbone("sized_convnet", 1, 10, 8, widths=[4, 8], convs_per_stage=1)
    plain = {id(m): count(m) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))}
    head = count(net[-1])
    x = torch.randn(3, 1, 8, 8)
    assert swap_to_maxout(net, pieces=2, example_input=x[:1]) == 2
    rewritten = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert sum(count(m) for m in rewritten) == 2 * sum(plain.values())  # conv + BN: k times
    assert count(net[-1]) == head  # the classifier, with no activation after it, is left alone
    assert [type(net[i]).__name__ for i in range(4)] == ["Conv2d", "BatchNorm2d", "Maxout", "MaxPool2d"]
    seen = []
    net[2].register_forward_hook(lambda m, inputs, output: seen.append((inputs[0], output)))
    net.eval()(x)
    pieces, output = seen[0]
    assert pieces.shape[1] == 8 and output.shape[1] == 4
    assert torch.equal(output, torch.maximum(pieces[:, 0::2], pieces[:, 1::2]))  # max of the normalized pieces


def test_F7_rewrite_without_bn_equals_a_maxout_conv_layer(pkg):
    backbones = importlib.import_module(f"{pkg.__name__}.backbones")
    torch.manual_seed(0)
    net = backbones.build_backbone("sized_convnet", 1, 10, 8, widths=[4], convs_per_stage=1, batch_norm=False)
    swap_to_maxout(net, pieces=3)
    layer = MaxoutConv2d(1, 4, kernel_size=3, padding=1, pieces=3)
    layer.conv.load_state_dict(net[0].state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net[1](net[0](x)), layer(x))


def test_F7_linear_rewrite_in_a_named_sequential():
    from collections import OrderedDict

    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc=nn.Linear(6, 5), act=nn.ReLU(), out=nn.Linear(5, 2)))
    assert swap_to_maxout(net, pieces=3) == 1
    assert (net.fc.out_features, net.act.pieces, count(net.fc)) == (15, 3, 3 * count(nn.Linear(6, 5)))
    x = torch.randn(4, 6)
    assert torch.allclose(net.act(net.fc(x)), net.fc(x).view(4, 5, 3).amax(dim=2)) and net(x).shape == (4, 2)


def test_F7_resnet_is_refused_with_the_backbone_named_and_left_unchanged(pkg):
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=8, backbone="resnet18")
    with pytest.raises(ValueError, match=r"backbone 'resnet18'.*sized_convnet"):
        ActivationSwap("maxout").setup(None, model, "fit")
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 9
    assert not any(isinstance(m, Maxout) for m in model.modules())


def test_F7_pieces_are_validated():
    with pytest.raises(ValueError, match="pieces=1"):
        MaxoutLinear(3, 3, pieces=1)
    with pytest.raises(ValueError, match="pieces=1"):
        Maxout(pieces=1)
