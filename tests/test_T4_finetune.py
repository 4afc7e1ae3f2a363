"""T4 — fine-tuning from a checkpoint of a short digits run (no downloads): frozen weights and BatchNorm
statistics stay bit-identical, finetune-all trains the backbone at the smaller LR, stage-probe reports one
accuracy per stage, and `auto` logs the cell it picked — a different one for a tiny and a large training set."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from pytorch_lightning import LightningDataModule
from pytorch_lightning.loggers import CSVLogger
from tiny import quiet_trainer
from torch.utils.data import Subset

from cnn_tricks.callbacks.finetune_auto import AutoFinetune, nearest_class_mean_accuracy
from cnn_tricks.callbacks.finetune_parts import backbone_parts
from cnn_tricks.callbacks.finetune_strategies import FinetuneAll, FinetuneTop, LinearProbe, StageProbe

WIDTHS = [8, 16]  # two stages, four conv blocks


def make_trainer(callbacks, tmp_path=None, **kwargs):
    options = {"max_epochs": 1, "limit_train_batches": 4, "limit_val_batches": 2, "num_sanity_val_steps": 0, **kwargs}
    return quiet_trainer(tmp_path, callbacks, **options)


@pytest.fixture(scope="module")
def digits(pkg):
    dm = pkg.ImageDataModule("digits", batch_size=32)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def pretrained(pkg, digits, tmp_path_factory):
    """A checkpoint of a few training steps on digits: the stand-in for pretrained weights."""
    torch.manual_seed(0)
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=32, backbone_options={"widths": WIDTHS})
    trainer = make_trainer([], limit_train_batches=30, limit_val_batches=0)
    trainer.fit(model, datamodule=digits)
    path = tmp_path_factory.mktemp("pretrained") / "digits.ckpt"
    trainer.save_checkpoint(path)
    return path


def finetune_model(pkg, checkpoint):
    torch.manual_seed(1)
    return pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=32, backbone_options={"widths": WIDTHS},
                               pretrained_checkpoint=str(checkpoint))


def backbone_state(checkpoint) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}


def changed(model, reference) -> set[str]:
    """Backbone tensors (weights and BatchNorm buffers) that differ from `reference` in any bit."""
    return {k for k, v in model.backbone.state_dict().items() if not torch.equal(v, reference[k])}


def head_keys(model) -> set[str]:
    return {k for k in model.backbone.state_dict() if k.startswith(f"{len(model.backbone) - 1}.")}


def test_T4_linear_probe_keeps_backbone_and_bn_stats_bit_identical(pkg, digits, pretrained):
    reference = backbone_state(pretrained)
    probed = finetune_model(pkg, pretrained)
    make_trainer([LinearProbe()]).fit(probed, datamodule=digits)
    assert changed(probed, reference) == head_keys(probed)  # only the head moved
    # the same run without the callback moves every conv, BatchNorm weight and running statistic
    free = finetune_model(pkg, pretrained)
    make_trainer([]).fit(free, datamodule=digits)
    assert {"0.weight", "1.weight", "1.running_mean", "1.running_var", "7.weight"} <= changed(free, reference)


def test_T4_finetune_top_trains_only_the_last_blocks(pkg, digits, pretrained):
    reference = backbone_state(pretrained)
    model = finetune_model(pkg, pretrained)
    make_trainer([FinetuneTop(blocks=1)]).fit(model, datamodule=digits)
    moved = changed(model, reference) - head_keys(model)
    # the last block is conv 10 + BatchNorm 11 of the sized convnet (stage 2's second conv); nothing below moved
    assert {k.split(".")[0] for k in moved} == {"10", "11"}


def test_T4_finetune_all_uses_the_smaller_backbone_lr(pkg, digits, pretrained):
    reference = backbone_state(pretrained)
    model = finetune_model(pkg, pretrained)
    trainer = make_trainer([FinetuneAll(backbone_lr_factor=0.1)])
    trainer.fit(model, datamodule=digits)
    head_group, backbone_group = trainer.optimizers[0].param_groups
    assert backbone_group["lr"] == pytest.approx(0.1 * head_group["lr"]) and head_group["lr"] == pytest.approx(0.1)
    parts = backbone_parts(model.backbone)
    assert {id(p) for p in backbone_group["params"]} == {id(p) for s in parts.stages for p in s.parameters()}
    assert {"0.weight", "1.running_mean", "7.weight"} <= changed(model, reference)


def test_T4_finetune_all_gradual_unfreezing_starts_at_the_top(pkg, digits, pretrained):
    reference = backbone_state(pretrained)
    model = finetune_model(pkg, pretrained)
    make_trainer([FinetuneAll(unfreeze_every=2)]).fit(model, datamodule=digits)  # epoch 0: the top stage only
    moved = {k.split(".")[0] for k in changed(model, reference) - head_keys(model)}
    assert moved == {"7", "8", "10", "11"}  # stage 2: conv 7, BN 8, conv 10, BN 11; stage 1 (0-5) untouched


def test_T4_stage_probe_reports_one_accuracy_per_stage(pkg, digits, pretrained, tmp_path, capsys, caplog):
    reference = backbone_state(pretrained)
    model = finetune_model(pkg, pretrained)
    probe = StageProbe()
    trainer = make_trainer([probe], tmp_path, logger=CSVLogger(tmp_path, name="run"), limit_train_batches=10,
                           limit_val_batches=4)
    with caplog.at_level(logging.INFO):  # said by rank_zero_info (the pytorch_lightning logger)
        trainer.fit(model, datamodule=digits)
    with capsys.disabled():
        print(f"\nstage-probe val accuracies: {probe.accuracies}, best stage {probe.best_stage}")
    assert len(probe.accuracies) == len(WIDTHS) and all(0.0 <= a <= 1.0 for a in probe.accuracies)
    assert {f"probe/stage{i}/acc" for i in range(len(WIDTHS))} | {"probe/best_stage"} <= set(trainer.callback_metrics)
    assert probe.best_stage == max(range(len(WIDTHS)), key=probe.accuracies.__getitem__)
    assert changed(model, reference) == head_keys(model)  # the backbone stayed frozen
    best = torch.load(tmp_path / "run" / "version_0" / "stage_probe_best.pt", weights_only=False)
    assert best(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert "best stage" in caplog.text


def test_T4_stage_probe_writes_nothing_under_fast_dev_run(pkg, digits, pretrained, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    probe = StageProbe()
    with caplog.at_level(logging.INFO):
        make_trainer([probe], tmp_path, fast_dev_run=True).fit(finetune_model(pkg, pretrained), datamodule=digits)
    assert probe.best_stage is not None and "not saved" in caplog.text
    assert list(tmp_path.iterdir()) == []


class Subsampled(LightningDataModule):
    def __init__(self, digits, size: int) -> None:
        super().__init__()
        self.digits, self.size = digits, size
        self.batch_size = 32

    def train_dataloader(self):
        loader = self.digits.train_dataloader()
        dataset = Subset(loader.dataset, range(self.size))
        return torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True)

    def val_dataloader(self):
        return self.digits.val_dataloader()


@pytest.mark.parametrize(("size", "data"), [(40, "little"), (1257, "lots")])
def test_T4_auto_picks_the_cell_by_data_size_and_logs_it(pkg, digits, pretrained, tmp_path, capsys, caplog, size, data):
    auto = AutoFinetune(min_samples_per_class=50, probe_samples=400)
    logger = CSVLogger(tmp_path, name="run")
    with caplog.at_level(logging.INFO):
        make_trainer([auto], tmp_path, logger=logger, limit_train_batches=1, limit_val_batches=1).fit(
            finetune_model(pkg, pretrained), datamodule=Subsampled(digits, size))
    choice = auto.choice
    with capsys.disabled():
        print(f"\nauto with {size} samples: {choice['strategy']} ({choice['reason']})")
    assert choice["data"] == data and choice["samples_per_class"] == pytest.approx(size / 10)
    assert len(choice["stage_accuracies"]) == len(WIDTHS)
    expected = {("little", "similar"): LinearProbe, ("little", "different"): StageProbe,
                ("lots", "similar"): FinetuneTop, ("lots", "different"): FinetuneAll}[(data, choice["similarity"])]
    assert type(auto.strategy) is expected
    hparams = yaml.safe_load((tmp_path / "run" / "version_0" / "hparams.yaml").read_text())
    assert hparams["finetune/strategy"] == choice["strategy"] and "samples per class" in hparams["finetune/reason"]
    assert f"-> {choice['strategy']}, because" in caplog.text


def test_T4_similarity_measure_separates_clusters():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat(25)
    separable = torch.nn.functional.one_hot(labels, 4).float() * 5 + torch.randn(100, 4) * 0.1
    assert nearest_class_mean_accuracy(separable, labels) == 1.0
    assert nearest_class_mean_accuracy(torch.randn(100, 4), labels) < 0.6
    auto = AutoFinetune(min_samples_per_class=100)
    assert auto.decide(10.0, [0.3, 0.9])["strategy"] == "linear-probe"  # top features separate best: similar
    assert auto.decide(10.0, [0.9, 0.3])["strategy"] == "stage-probe"
    assert auto.decide(500.0, [0.3, 0.9])["strategy"] == "finetune-top"
    assert auto.decide(500.0, [0.9, 0.3])["strategy"] == "finetune-all"


def test_T4_pretrained_checkpoint_skips_a_head_of_another_size(pkg, pretrained, tmp_path):
    reference = backbone_state(pretrained)
    model = pkg.ImageClassifier(num_classes=5, in_channels=1, image_size=32, backbone_options={"widths": WIDTHS},
                                pretrained_checkpoint=str(pretrained))
    model.load_pretrained()
    state = model.backbone.state_dict()
    assert torch.equal(state["0.weight"], reference["0.weight"]) and torch.equal(state["1.running_var"], reference["1.running_var"])
    assert state["17.weight"].shape == (5, 16)  # the 10-class head was not forced in
    missing = pkg.ImageClassifier(pretrained_checkpoint=str(tmp_path / "nope.ckpt"))
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        missing.load_pretrained()


def test_T4_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="blocks=0"):
        FinetuneTop(blocks=0)
    with pytest.raises(ValueError, match="backbone_lr_factor=0"):
        FinetuneAll(backbone_lr_factor=0)
    with pytest.raises(ValueError, match="min_samples_per_class=0"):
        AutoFinetune(min_samples_per_class=0)
