"""Predicting new images (`lightning predict --data.predict_root`) and test-time augmentation (evaluate/tta).

One checkpoint is trained a few steps on 16-pixel digits through the project's CLI; digits of the test
split are written as 32-pixel PNGs (plus a broken file). `predict` labels every readable file once (also
with two DDP processes and with `--ensemble`) with the top-1 class the checkpoint's model gives the same
files through the same transforms; TTA logs test/acc with and without it on the same images, averages
exactly the views' probabilities, and refuses a flip on digits with the A7 message."""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from conftest import offline_env, run

# A narrow net on 16-pixel digits; the predict commands keep the config's 32 pixels: the checkpoint's size wins.
SMALL = ["--data.num_workers=0", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false", "--model.backbone_options={widths: [8, 16], convs_per_stage: 1}",
         "--trainer.logger=CSVLogger", "--trainer.logger.save_dir=runs"]
FIT = [*SMALL, "--data.image_size=16", "--trainer.max_epochs=1", "--trainer.limit_train_batches=6",
       "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1"]
IMAGES = 23  # odd: two DDP processes get unequal shares


@pytest.fixture(scope="module")
def trained(pkg, project, tmp_path_factory):
    """(folder, checkpoint): a run trained through the CLI in `folder`, and its best.ckpt."""
    folder = tmp_path_factory.mktemp("predict")
    cli = importlib.import_module(f"{pkg.__name__}.cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("HOME", str(folder))
        cli.main(["fit", f"--config={project / 'configs/default.yaml'}", *FIT])
    (checkpoint,) = folder.glob("runs/**/checkpoints/best.ckpt")
    return folder, checkpoint


@pytest.fixture(scope="module")
def images(pkg, trained) -> Path:
    """IMAGES test digits as 32-pixel grayscale PNGs in nested folders, and `broken.png` (garbage bytes)."""
    folder = trained[0] / "images"
    data = pkg.ImageDataModule("digits", image_size=32)
    data.setup("test")
    for index in range(IMAGES):
        image, label = data.splits.test[index]
        path = folder / f"part{index % 2}" / f"{index:03d}_label{int(label)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy(), mode="L").save(path)
    (folder / "broken.png").write_bytes(b"not a png at all")
    return folder


def checkpoint_model(pkg, checkpoint: Path):
    """The checkpoint's ImageClassifier and a DataModule holding its pre-processing statistics and classes."""
    ensemble = importlib.import_module(f"{pkg.__name__}.ensemble")
    state = ensemble.load_checkpoint(checkpoint)
    model = ensemble.build_member(checkpoint, state).eval()
    data = pkg.ImageDataModule("digits", image_size=model.hparams.image_size)
    data.load_state_dict(state["ImageDataModule"])
    return model, data


@torch.no_grad()
def reference_labels(pkg, checkpoint: Path, paths: list[str]) -> list[str]:
    """Top-1 class names computed here: PNG -> uint8 resize to the checkpoint's size -> [0, 1] -> its statistics."""
    model, data = checkpoint_model(pkg, checkpoint)
    size = model.hparams.image_size
    preprocess = data.preprocess_transform()
    batch = torch.stack([preprocess(TF.resize(TF.pil_to_tensor(Image.open(p).convert("L")), [size, size],
                                              antialias=True).float() / 255) for p in paths])
    return [data.classes[i] for i in model(batch).argmax(-1).tolist()]


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        return list(reader.fieldnames), list(reader)


def predict(pkg, project, folder: Path, *args: str) -> None:
    cli = importlib.import_module(f"{pkg.__name__}.cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("HOME", str(folder))
        cli.main(["predict", f"--config={project / 'configs/default.yaml'}", *SMALL, *args])


def test_predict_labels_every_readable_image_once_like_the_checkpoints_model(pkg, project, trained, images, capsys):
    folder, checkpoint = trained
    with pytest.warns(UserWarning, match=r"skipping 1 of 24 images that cannot be read: \S*broken.png"):
        predict(pkg, project, folder, f"--ckpt_path={checkpoint}", f"--data.predict_root={images}", "--data.batch_size=8")
    output = capsys.readouterr().out
    csv_path = checkpoint.parent.parent / "predictions.csv"  # <run>/predictions.csv
    assert output.rstrip().splitlines()[-1] == f"predictions: {csv_path}"
    assert "data.image_size=16, the checkpoint's input size (the config says 32)" in output
    header, rows = read_rows(csv_path)
    assert header == ["path", "label", "probability", "label_2", "probability_2", "label_3", "probability_3"]
    paths = [row["path"] for row in rows]
    assert paths == sorted(str(p) for p in images.rglob("*_label*.png"))  # each readable file once, in file order
    assert [row["label"] for row in rows] == reference_labels(pkg, checkpoint, paths)
    for row in rows:
        probabilities = [float(row[key]) for key in ("probability", "probability_2", "probability_3")]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-5
        assert len({row["label"], row["label_2"], row["label_3"]}) == 3


def test_predict_refuses_an_empty_folder_and_top_k_below_one_before_anything_runs(pkg, project, trained, tmp_path):
    folder, checkpoint = trained
    empty = tmp_path / "empty"
    (empty / "nested").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(SystemExit, match=r"error: data.predict_root='\S+empty': no image files \(.*\) under \S+empty\. "
                                         "Point it at a folder of images or a list of image paths."):
        predict(pkg, project, folder, f"--ckpt_path={checkpoint}", f"--data.predict_root={empty}")
    with pytest.raises(SystemExit, match=r"error: data.predict_top_k=0: use 1 or more"):
        predict(pkg, project, folder, f"--ckpt_path={checkpoint}", f"--data.predict_root={folder / 'images'}",
                "--data.predict_top_k=0")
    assert not (checkpoint.parent.parent / ".predictions.csv.rank0.part").exists()


def test_predict_with_an_ensemble_and_a_list_file_writes_top_k_names_in_the_current_folder(pkg, project, trained, images,
                                                                                         tmp_path, capsys):
    _, checkpoint = trained
    listed = sorted(images.rglob("*_label*.png"))[:5]
    list_file = images / "few.txt"
    list_file.write_text("# five of them\n" + "\n".join(str(p.relative_to(images)) for p in listed) + "\n\n")
    # Two copies of one checkpoint: the ensemble's averaged probabilities are the model's own.
    predict(pkg, project, tmp_path, "--ensemble", str(checkpoint), str(checkpoint), f"--data.predict_root={list_file}",
            "--data.predict_top_k=2")
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == f"predictions: {tmp_path / 'predictions.csv'}"
    header, rows = read_rows(tmp_path / "predictions.csv")
    assert header == ["path", "label", "probability", "label_2", "probability_2"]
    assert [row["path"] for row in rows] == [str(p) for p in listed]
    assert [row["label"] for row in rows] == reference_labels(pkg, checkpoint, [str(p) for p in listed])


def test_predict_without_predict_root_still_predicts_the_test_split(pkg, project, trained):
    folder, checkpoint = trained
    cli = importlib.import_module(f"{pkg.__name__}.cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("HOME", str(folder))
        result = cli.main(["predict", f"--config={project / 'configs/default.yaml'}", *SMALL, f"--ckpt_path={checkpoint}"])
    probabilities = torch.cat(result.trainer.predict_loop.predictions)
    assert probabilities.shape == (270, 10) and torch.allclose(probabilities.sum(-1), torch.ones(270))
    assert not any(isinstance(c, importlib.import_module(f"{pkg.__name__}.prediction").PredictionWriter)
                   for c in result.trainer.callbacks)


def test_predict_with_two_ddp_processes_writes_each_image_exactly_once(pkg, project, trained, images, home):
    folder, checkpoint = trained
    output = checkpoint.parent.parent / "predictions.csv"
    output.unlink(missing_ok=True)
    # batch 4: rank 0 gets 12 of the 23 files, rank 1 gets 11 (a padding sampler would repeat one; the merge keeps it once)
    result = run([sys.executable, "-m", pkg.__name__, "predict", f"--config={project / 'configs/default.yaml'}", *SMALL,
                  f"--ckpt_path={checkpoint}", f"--data.predict_root={images}", "--data.batch_size=4",
                  "--trainer.strategy=ddp", "--trainer.devices=2"], cwd=folder, env=offline_env(home, project), timeout=300)
    assert "Starting with 2 processes" in result.stdout + result.stderr
    assert f"predictions: {output}" in result.stdout
    _, rows = read_rows(output)
    paths = [row["path"] for row in rows]
    assert paths == sorted(str(p) for p in images.rglob("*_label*.png")) and len(paths) == IMAGES
    assert [row["label"] for row in rows] == reference_labels(pkg, checkpoint, paths)
    assert not list(output.parent.glob(".predictions.csv.rank*.part"))


# ----------------------------------------------------------------------------- test-time augmentation
def tta_class(pkg):
    return importlib.import_module(f"{pkg.__name__}.callbacks.test_time_augmentation").TestTimeAugmentation


def quiet_trainer(callbacks=()):
    from pytorch_lightning import Trainer

    return Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, callbacks=list(callbacks))


def test_tta_logs_test_acc_with_and_without_it_on_the_same_images(pkg, trained):
    model, data = checkpoint_model(pkg, trained[1])
    (plain,) = quiet_trainer().test(model, datamodule=data, verbose=False)
    tta = tta_class(pkg)(shift=2)
    (metrics,) = quiet_trainer([tta]).test(model, datamodule=data, verbose=False)
    assert metrics["test/acc_plain"] == pytest.approx(plain["test/acc"], abs=1e-6)  # the same 270 images, no TTA
    assert metrics["test/acc"] == pytest.approx(metrics["test/acc_tta"], abs=1e-6)  # the model's metric is TTA's
    assert metrics["test/tta_gain"] == pytest.approx(metrics["test/acc_tta"] - metrics["test/acc_plain"], abs=1e-6)
    assert metrics["test/tta_views"] == 5 and tta.num_views == 5
    assert metrics["test/loss"] != pytest.approx(plain["test/loss"])  # the averaged prediction is another prediction
    assert "forward" not in vars(model)  # the model is left as it was


def test_tta_probabilities_are_exactly_the_mean_of_the_views_and_reach_predict(pkg, trained):
    model, data = checkpoint_model(pkg, trained[1])
    data.setup("test")
    images, _ = next(iter(data.test_dataloader()))
    tta = tta_class(pkg)(shift=2, transforms=[v2.RandomAffine(degrees=10)], draws=2)
    assert tta.num_views == 7
    torch.manual_seed(0)
    with torch.no_grad():
        plain, averaged = tta.average(model, images)
        torch.manual_seed(0)  # the random views draw the same parameters again
        views = [images] + [view(images) for view in tta.views]
        expected = torch.stack([model(view).softmax(-1) for view in views]).mean(0)
    assert torch.equal(averaged, expected) and torch.equal(plain, model(images))
    assert not torch.equal(averaged, plain.softmax(-1))
    # predict returns the averaged probabilities (deterministic views here, for a comparison outside the run)
    shifts = tta_class(pkg)(shift=2)
    predicted = torch.cat(quiet_trainer([shifts]).predict(model, datamodule=data))
    with torch.no_grad():
        expected = torch.cat([shifts.average(model, batch)[1] for batch, _ in data.predict_dataloader()])
    assert torch.allclose(predicted, expected, atol=1e-6) and "forward" not in vars(model)


def test_tta_refuses_a_flip_on_digits_with_the_A7_message(pkg, trained):
    model, data = checkpoint_model(pkg, trained[1])
    with pytest.raises(ValueError) as augment_error:
        pkg.ImageDataModule("digits", augment=[v2.RandomHorizontalFlip(p=1.0)])
    reason = "changes what digits images show (A7): RandomHorizontalFlip(p=1.0): a mirrored 2, 3, 4, 5, 7 or 9 is no digit"
    assert reason in str(augment_error.value)
    with pytest.raises(ValueError) as tta_error:
        quiet_trainer([tta_class(pkg)(horizontal_flip=True, shift=1)]).test(model, datamodule=data, verbose=False)
    assert str(tta_error.value) == str(augment_error.value).replace("data.augment", "TestTimeAugmentation").replace(
        "data.allow_identity_changing", "TestTimeAugmentation.allow_identity_changing")
    assert "forward" not in vars(model)
    # allowed on purpose, it runs (10 views would be 1 + flip + 4 shifts = 6)
    (metrics,) = quiet_trainer([tta_class(pkg)(horizontal_flip=True, shift=1, allow_identity_changing=True)]).test(
        model, datamodule=data, verbose=False)
    assert metrics["test/tta_views"] == 6


@pytest.mark.parametrize(("options", "message"), [
    ({}, r"TestTimeAugmentation\(\): no views besides the plain image"),
    ({"shift": -1}, r"TestTimeAugmentation\(shift=-1\): use 0"),
    ({"shift": 1, "draws": 0}, r"TestTimeAugmentation\(draws=0\): use 1 or more"),
])
def test_tta_checks_its_options(pkg, options, message):
    with pytest.raises(ValueError, match=message):
        tta_class(pkg)(**options)
