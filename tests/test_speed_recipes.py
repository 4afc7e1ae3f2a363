"""Speed recipes of the GPU path, shown on CPU: what each changes, and that the model's values
and checkpoints do not change. Their speed is measured by `python benchmarks/bench.py --only gpu`
on a GPU (none here)."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from pytorch_lightning import Callback
from tiny import quiet_trainer
from torch import nn

from cnn_tricks.callbacks.channels_last import ChannelsLast
from cnn_tricks.callbacks.compile_model import CompileModel

from conftest import RECIPES


class FirstConvProbe(Callback):
    """Records the first conv's output (dtype, layout) during the first training step."""

    def __init__(self) -> None:
        self.seen: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        conv = next(m for m in pl_module.modules() if isinstance(m, nn.Conv2d))

        def hook(module, inputs, output):
            self.seen.setdefault("dtype", output.dtype)
            self.seen.setdefault("channels_last", output.is_contiguous(memory_format=torch.channels_last)
                                 and not output.is_contiguous())
        conv.register_forward_hook(hook)


def fit_two_steps(pkg, callbacks, precision="32-true"):
    torch.manual_seed(0)
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=16)
    dm = pkg.ImageDataModule("digits", image_size=16, batch_size=32)
    probe = FirstConvProbe()
    trainer = quiet_trainer(callbacks=[*callbacks, probe], max_steps=2, limit_val_batches=0, precision=precision)
    trainer.fit(model, datamodule=dm)
    return model, probe.seen


def test_bf16_recipe_autocasts_convolutions_and_keeps_float32_weights(pkg):
    assert yaml.safe_load((RECIPES / "trainer/bf16.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"
    model, seen = fit_two_steps(pkg, [], precision="bf16-mixed")
    assert seen["dtype"] == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    _, seen = fit_two_steps(pkg, [])
    assert seen["dtype"] == torch.float32


def test_channels_last_stores_nhwc_and_changes_no_value(pkg):
    model, seen = fit_two_steps(pkg, [ChannelsLast()])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # (with one input channel both layouts coincide, so only the wider convs can show the difference)
    assert all(not c.weight.is_contiguous() for c in convs if c.in_channels > 1)
    assert seen["channels_last"] is True
    plain, seen_plain = fit_two_steps(pkg, [])
    assert seen_plain["channels_last"] is False
    assert plain.state_dict().keys() == model.state_dict().keys()
    # Same values: from the same weights, one forward and backward in either layout give the same outputs and
    # gradients up to float rounding. (Weights after several SGD steps are not compared: a rounding-level
    # difference can flip a max-pool tie and then grow, which says nothing about the layout.)
    contiguous = copy.deepcopy(plain).train()
    nhwc = copy.deepcopy(plain).train()
    ChannelsLast().setup(None, nhwc, "fit")
    images = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(8)
    outputs = []
    for net, batch in ((contiguous, images), (nhwc, images.contiguous(memory_format=torch.channels_last))):
        logits = net(batch)
        torch.nn.functional.cross_entropy(logits, targets).backward()
        outputs.append((logits.detach(), {n: p.grad.float() for n, p in net.named_parameters()}))
    (plain_logits, plain_grads), (nhwc_logits, nhwc_grads) = outputs
    assert torch.allclose(plain_logits, nhwc_logits, atol=1e-5)
    assert max((plain_grads[n] - g).abs().max().item() for n, g in nhwc_grads.items()) < 1e-4
    with pytest.raises(ValueError, match="no 4-D weights"):
        ChannelsLast().setup(None, nn.Linear(2, 2), "fit")


def test_compile_compiles_in_place_and_keeps_the_checkpoint_keys(pkg):
    torch._dynamo.reset()
    eager_keys = set(pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=16).state_dict())
    compiled_cb = CompileModel(backend="eager")  # the tracing path of inductor without its C++ build (fast on CPU)
    model, _ = fit_two_steps(pkg, [compiled_cb])
    assert compiled_cb.compiled is model.backbone and model.backbone._compiled_call_impl is not None
    assert set(model.state_dict()) == eager_keys  # no `_orig_mod.` prefixes: checkpoints load into eager models
    eager = copy.deepcopy(model.backbone)
    eager._compiled_call_impl = None
    images = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.eval()(images), eager.eval()(images), atol=1e-5)
    plain, _ = fit_two_steps(pkg, [])  # same two steps without compiling: same weights
    drift = max((plain.state_dict()[k].float() - v.float()).abs().max().item() for k, v in model.state_dict().items())
    assert drift < 1e-5
    with pytest.raises(ValueError, match="CompileModel.mode='fast'.: use one of"):
        CompileModel(mode="fast")
    with pytest.raises(ValueError, match="CompileModel.backend='tensorrt-x'.: use one of"):
        CompileModel(backend="tensorrt-x")
