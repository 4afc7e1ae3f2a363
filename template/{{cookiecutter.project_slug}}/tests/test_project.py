"""The generated project's own tests: model, data, the CLI loop, checkpoints, W&B offline."""

import importlib
import importlib.util
import json
import re
import time
from pathlib import Path

import pytest
import torch

from conftest import DEFAULT_CONFIG, RECIPES

# The embedded digits whatever dataset the project was generated for: the tests need no data files.
DIGITS = ["--data.dataset=digits", "--data.num_workers=0", "--data.image_size=32"]
QUICK = [*DIGITS, "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1"]


def test_sized_convnet_keeps_size_per_conv_and_halves_per_pool(pkg):
    from importlib import import_module

    backbones = import_module(pkg.__name__ + ".backbones")
    net = backbones.SizedConvNet(in_channels=1, num_classes=10, widths=(8, 16))
    x = torch.zeros(2, 1, 32, 32)
    sizes = []
    for layer in net:
        x = layer(x)
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            sizes.append(x.shape[-1])
    assert sizes == [32, 32, 16, 16, 16, 8]
    assert x.shape == (2, 10)


def test_digits_splits_are_disjoint_and_reproducible(pkg):
    first, second = pkg.ImageDataModule("digits"), pkg.ImageDataModule("digits")
    first.setup("fit"), second.setup("fit")
    splits = first.splits
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1257, 270, 270)
    assert splits.train.indices == second.splits.train.indices
    assert not set(splits.train.indices) & set(splits.val.indices)
    images, labels = next(iter(first.train_dataloader()))
    assert images.shape == (64, 1, 32, 32) and labels.dtype == torch.long


def test_augment_touches_the_training_split_only(pkg):
    from torchvision.transforms import v2

    dm = pkg.ImageDataModule("digits", augment=[v2.RandomHorizontalFlip(p=1.0)], allow_identity_changing=True)
    dm.setup("fit")
    image, _ = dm.splits.train[0]
    flipped, _ = dm.train_dataloader().dataset[0]
    plain, _ = dm.val_dataloader().dataset[0]
    assert torch.allclose(flipped, dm.eval_transform(image.flip(-1)))
    assert torch.allclose(plain, dm.eval_transform(dm.splits.val[0][0]))


# Recipes whose transforms change what a digit shows (A7: mirrored digits are no digits).
IDENTITY_CHANGING_ON_DIGITS = {"augment/flip.yaml", "trainer/cifar10-fast.yaml", "trainer/fashion-mnist-fast.yaml"}


@pytest.mark.parametrize("recipe", sorted(p.relative_to(RECIPES).as_posix() for p in RECIPES.rglob("*.yaml")))
def test_every_recipe_runs_fast_dev_run(cli, recipe):
    args = ["fit", f"--config={DEFAULT_CONFIG}", f"--config={RECIPES / recipe}", *DIGITS, "--trainer.fast_dev_run=true"]
    recipes = importlib.import_module(cli.__name__.replace(".cli", ".recipe_info"))
    info = recipes.read_recipe(RECIPES / recipe, RECIPES)
    slot = info.exclusive
    merged = [name for name in recipes.merged_recipes(DEFAULT_CONFIG.read_text()) if name != recipe.removesuffix(".yaml")]
    if slot and any(recipes.read_recipe(RECIPES / f"{name}.yaml", RECIPES).exclusive == slot for name in merged):
        with pytest.raises(SystemExit, match=f"cannot be combined: each sets the {slot}"):  # a recipe merged at
            cli.main(args)  # generation holds the slot: the project refuses a second one at start
        return
    if info.requires and importlib.util.find_spec(info.requires) is None:  # without its optional package the
        with pytest.raises(SystemExit, match=re.escape(f"pip install -e '.[{info.requires}]'")):  # recipe stops at start
            cli.main(args)
        return
    if recipe in IDENTITY_CHANGING_ON_DIGITS:  # A7 refuses it on digits at start; forced, it runs
        with pytest.raises(SystemExit, match="error: data.augment changes what digits images show"):
            cli.main(args)
        args.append("--data.allow_identity_changing=true")
    cli.main(args)


def test_fit_then_test_best_and_resume_last(cli, isolated):
    fit = cli.main(["fit", f"--config={DEFAULT_CONFIG}", *QUICK])
    assert Path(fit.trainer.checkpoint_callback.best_model_path).name == "best.ckpt"
    test = cli.main(["test", f"--config={DEFAULT_CONFIG}", "--ckpt_path=best", *DIGITS, "--trainer.enable_progress_bar=false"])
    assert test.trainer.ckpt_path.endswith("best.ckpt")
    assert 0.0 <= test.trainer.callback_metrics["test/acc"] <= 1.0
    resumed = cli.main(["fit", f"--config={DEFAULT_CONFIG}", "--ckpt_path=last", *QUICK[1:], "--trainer.max_epochs=2"])
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 6


def test_two_fits_in_a_row_in_one_folder(cli, isolated):
    import wandb

    for _ in range(2):  # as two `lightning fit` processes would
        cli.main(["fit", f"--config={DEFAULT_CONFIG}", *QUICK])
        wandb.finish()
    configs = sorted(isolated.glob("runs/**/config.yaml"))
    assert len(configs) == 2 and configs[0].parent != configs[1].parent


def test_wandb_goes_offline_and_keeps_the_metrics(cli, isolated, caplog):
    import importlib
    import logging

    import wandb

    loggers = importlib.import_module(cli.__name__.replace(".cli", ".loggers"))

    lightning_log = logging.getLogger("pytorch_lightning")  # the rank-zero logger (it does not propagate to root)
    lightning_log.addHandler(caplog.handler)
    try:
        cli.main(["fit", f"--config={DEFAULT_CONFIG}", f"--config={RECIPES / 'logger/wandb.yaml'}", *QUICK])
        wandb.finish()
    finally:
        lightning_log.removeHandler(caplog.handler)
    assert "upload it with `wandb sync" in caplog.text
    (run_file,) = isolated.glob("runs/wandb/offline-run-*/run-*.wandb")
    expected = {"train/loss_step", "train/acc", "val/acc", "val/loss"}
    deadline = time.monotonic() + 60  # wandb-core, a separate process, may still be flushing the file
    while True:
        keys, config = set(), {}
        for record in loggers.read_offline_run(run_file):
            if record.WhichOneof("record_type") == "history":
                keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
            if record.WhichOneof("record_type") == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        if expected <= keys or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert expected <= keys
    assert config["data"]["dataset"] == "digits" and config["trainer"]["max_epochs"] == 1


def test_recipes_claiming_the_same_slot_fail_before_training(cli, isolated):
    recipes = isolated / "recipes" / "schedule"
    recipes.mkdir(parents=True)
    for name in ("a", "b"):
        (recipes / f"{name}.yaml").write_text(f"# X — schedule {name}\n# exclusive: test-slot\ntrainer:\n  max_epochs: 1\n")
    with pytest.raises(SystemExit, match="Recipes schedule/a and schedule/b cannot be combined: each sets the test-slot"):
        cli.main(["fit", f"--config={DEFAULT_CONFIG}", f"--config={recipes / 'a.yaml'}", f"--config={recipes / 'b.yaml'}", *QUICK])
    assert not (isolated / "runs").exists()


def test_missing_checkpoint_is_a_clear_error(cli):
    with pytest.raises(SystemExit, match="no checkpoints/best.ckpt"):
        cli.main(["test", f"--config={DEFAULT_CONFIG}", "--ckpt_path=best", *DIGITS])


def test_nan_loss_stops_with_the_diagnosis_and_keeps_the_last_good_checkpoint(cli, isolated):
    # Healthy first epoch (checkpoints written), then the LR grows 1e5x per epoch until the loss is NaN.
    exploding = ["--model.backbone_options={batch_norm: false}", "--model.optimizer.init_args.lr=0.01",
                 "--model.lr_scheduler=torch.optim.lr_scheduler.ExponentialLR", "--model.lr_scheduler.gamma=1e5"]
    with pytest.raises(SystemExit, match="very high learning rate.*divide the learning rate"):
        cli.main(["fit", f"--config={DEFAULT_CONFIG}", *QUICK, *exploding, "--trainer.max_epochs=8"])
    (last,) = isolated.glob("runs/**/checkpoints/last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] >= 0
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_non_positive_learning_rate_is_refused_before_training(cli, isolated):
    with pytest.raises(SystemExit, match=r"model.optimizer.init_args.lr=-0.1: the learning rate must be positive"):
        cli.main(["fit", f"--config={DEFAULT_CONFIG}", *QUICK, "--model.optimizer.init_args.lr=-0.1"])
    assert not (isolated / "runs").exists()


class Payload:
    """Stands for arbitrary pickled code inside a checkpoint."""


def test_checkpoint_with_pickled_code_is_refused(cli, isolated):
    cli.main(["fit", f"--config={DEFAULT_CONFIG}", *QUICK])
    (best,) = isolated.glob("runs/**/checkpoints/best.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["payload"] = Payload()
    torch.save(checkpoint, best)
    with pytest.raises(SystemExit, match="Refused to load the checkpoint: it carries pickled objects"):
        cli.main(["test", f"--config={DEFAULT_CONFIG}", "--ckpt_path=best", *DIGITS])


def write_image_folders(root: Path) -> None:
    """Small image folders, each broken in one way (and one that is fine)."""
    from PIL import Image

    def image(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(path.name) * 20, 0, 0)).save(path)

    for name in ("x.png", "y.png"):
        image(root / "ok/a" / name), image(root / "ok/b" / name)
        image(root / "one_class/a" / name)
        image(root / "empty_class/a" / name)
        image(root / "corrupt/a" / name), image(root / "corrupt/b" / name)
        image(root / "mismatch/train/a" / name), image(root / "mismatch/train/b" / name)
        image(root / "mismatch/val/a" / name), image(root / "mismatch/val/c" / name)
    (root / "empty_class/b").mkdir()
    (root / "corrupt/a/broken.png").write_bytes(b"not a png at all")


FOLDERS = ["--data.dataset=imagefolder", "--data.num_workers=0"]
BAD_INPUTS = [  # (extra arguments, the message that names the value and the fix)
    (["--model.optimizer.init_args.lr=0"], "model.optimizer.init_args.lr=0.0: the learning rate must be positive"),
    (["--data.batch_size=0"], "data.batch_size=0: use a positive batch size"),
    (["--data.num_workers=-1"], "data.num_workers=-1: use 0 or more"),
    (["--data.dataset=svhn"], "data.dataset='svhn' is unknown: choose one of"),
    (["--model.backbone=vgg11"], "model.backbone='vgg11' is unknown: choose one of"),
    (["--data.image_size=4"], "image_size=4 is too small"),
    (["--data.val_fraction=0.9"], "data.val_fraction=0.9: use a fraction in (0, 0.5)"),
    (["--data.num_folds=5", "--data.fold=5"], "data.fold=5 is out of range for data.num_folds=5"),
    (["--data.dataset=imagefolder", "--data.root=no/such/folder"], "data.root='no/such/folder': folder"),
    (["--data.dataset=mnist", "--data.download=false", "--data.root=empty"], "mnist is not in"),
    (["--model.label_smoothing=1.5"], "model.label_smoothing=1.5: use a value in [0, 1)"),
    (["--ckpt_path=no/such.ckpt"], "ckpt_path='no/such.ckpt': no such file"),
    (["--trainer.max_epochs=-2"], "max_epochs"),
    (["--model.optimizer=torch.optim.NoSuchOptimizer"], "torch.optim.NoSuchOptimizer"),
    (["--data.masks=true"], "data.masks=true needs data.dataset=imagefolder"),
    (["--data.augment+=torchvision.transforms.v2.RandomVerticalFlip"], "data.augment changes what digits images show"),
    ([*FOLDERS, "--data.root=folders/one_class"], "has 1 class folder(s): an image folder needs one sub-folder per class"),
    ([*FOLDERS, "--data.root=folders/empty_class"], "has no usable images"),
    ([*FOLDERS, "--data.root=folders/corrupt", "--data.corrupt_images=error"], "1 of 5 image files under"),
    ([*FOLDERS, "--data.root=folders/mismatch"], "give every split the same class folders"),
    ([*FOLDERS, "--data.root=folders/ok", "--data.device_augment=true"], "set data.device_augment=false for imagefolder"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS, ids=lambda v: str(v)[:50])
def test_bad_config_values_fail_before_anything_is_written(cli, isolated, capsys, extra, message):
    write_image_folders(isolated / "folders")
    with pytest.raises(SystemExit) as error:
        cli.main(["fit", f"--config={DEFAULT_CONFIG}", *QUICK, *extra])
    assert message in str(error.value) + capsys.readouterr().err  # parse errors print argparse's usage + message
    assert not (isolated / "runs").exists()  # no run folder, no W&B run, no checkpoint


def test_truncated_checkpoint_is_named_before_loading(cli, isolated):
    cli.main(["fit", f"--config={DEFAULT_CONFIG}", *QUICK])
    (best,) = isolated.glob("runs/**/checkpoints/best.ckpt")
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    with pytest.raises(SystemExit, match="best.ckpt' is truncated or corrupt"):
        cli.main(["test", f"--config={DEFAULT_CONFIG}", "--ckpt_path=best", *DIGITS])
