"""T2 — gradient normalization: the mean-reduced loss makes the gradient scale independent of the batch
size, and LRBatchScaling sets the LR for the global batch (devices x batch x accumulation) as configured."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from tiny import BatchLRs, TinyClassifier, quiet_trainer, random_loader, tiny_mlp

from cnn_tricks.callbacks.lr_batch_scaling import LRBatchScaling, global_batch_size, lr_scale


def gradient_vector(model, images, labels, loss_fn) -> torch.Tensor:
    model.zero_grad()
    loss_fn(model(images), labels).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def gradient_norm(model, images, labels, loss_fn) -> float:
    return gradient_vector(model, images, labels, loss_fn).norm().item()


def test_T2_gradient_scale_does_not_depend_on_batch_size(pkg):
    dm = pkg.ImageDataModule("digits", batch_size=64)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=32, backbone_options={"widths": [8, 16]})
    model.train()  # BatchNorm on batch statistics: a batch repeated twice has the same mean and (biased) variance

    def summed(logits, targets):
        return F.cross_entropy(logits, targets, reduction="sum")

    # Same data: batch 64 is batch 32 twice, so the mean-reduced gradient must be equal, a summed one doubles.
    small, doubled = (images[:32], labels[:32]), (images[:32].repeat(2, 1, 1, 1), labels[:32].repeat(2))
    mean_small, mean_double = gradient_norm(model, *small, model.loss), gradient_norm(model, *doubled, model.loss)
    sum_small, sum_double = gradient_norm(model, *small, summed), gradient_norm(model, *doubled, summed)
    print(f"same data, batch 32 -> 64: mean loss grad norm {mean_small:.4f} -> {mean_double:.4f}; "
          f"sum loss {sum_small:.4f} -> {sum_double:.4f}")
    assert mean_double == pytest.approx(mean_small, rel=1e-4)
    assert sum_double == pytest.approx(2 * sum_small, rel=1e-4)

    # Distinct samples (BatchNorm in eval mode, so samples do not interact): the batch-64 gradient is the
    # average of its two batch-32 halves' gradients, the same scale as one of them; a summed loss adds them.
    model.eval()
    first, second, both = (images[:32], labels[:32]), (images[32:], labels[32:]), (images, labels)
    halves = [gradient_vector(model, *half, model.loss) for half in (first, second)]
    full = gradient_vector(model, *both, model.loss)
    assert torch.allclose(full, (halves[0] + halves[1]) / 2, atol=1e-6)
    full_sum = gradient_vector(model, *both, summed)
    halves_sum = [gradient_vector(model, *half, summed) for half in (first, second)]
    assert torch.allclose(full_sum, halves_sum[0] + halves_sum[1], rtol=1e-4, atol=1e-4)
    ratio, ratio_sum = full.norm() / halves[0].norm(), full_sum.norm() / halves_sum[0].norm()
    print(f"distinct samples, batch 64 vs its first 32: mean-loss norm ratio {ratio:.3f}, sum-loss {ratio_sum:.3f}")
    assert ratio_sum / ratio == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 2.0), ("sqrt", math.sqrt(2.0))])
def test_T2_accumulation_scales_the_lr_as_configured(rule, factor, caplog):
    data = random_loader(64, side=4, batch_size=16)
    probe = BatchLRs()
    trainer = quiet_trainer(callbacks=[LRBatchScaling(rule=rule, reference_batch=16, batch_size=16), probe], max_epochs=1,
                            limit_train_batches=4, accumulate_grad_batches=2)
    with caplog.at_level(logging.INFO):  # said by rank_zero_info (the pytorch_lightning logger)
        trainer.fit(TinyClassifier(tiny_mlp(16, 3, flatten=True), lr=0.1, momentum=0.9), data)
    # global batch 1 device x 16 x 2 accumulation = 32 = 2 x the reference batch
    assert probe.lrs == pytest.approx([0.1 * factor] * 4)
    assert f"global batch 32 = 1 device(s) x 16 x 2 accumulation; rule '{rule}'" in caplog.text


def test_T2_two_devices_with_accumulation_two():
    total = global_batch_size(devices=2, batch_size=32, accumulate_grad_batches=2)
    assert total == 128
    # reference 32: linear x4, sqrt x2
    assert 0.1 * lr_scale(total, 32, "linear") == pytest.approx(0.4)
    assert 0.1 * lr_scale(total, 32, "sqrt") == pytest.approx(0.2)
    assert 0.1 * lr_scale(total, 32, "none") == pytest.approx(0.1)


def test_T2_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="rule='cubic'"):
        LRBatchScaling(rule="cubic")
    with pytest.raises(ValueError, match="reference_batch=0"):
        LRBatchScaling(reference_batch=0)
    with pytest.raises(ValueError, match="devices=0"):
        global_batch_size(0, 32)
