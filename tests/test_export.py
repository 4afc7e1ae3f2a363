"""`<slug> export`: digits checkpoints of the default model, of a resnet18 and of a model trained with recipes
preprocess/standardize and activation/prelu become ONNX / TorchScript files that take raw [0, 1] images and
return the checkpoint's class probabilities — pre-processing inside, PReLU surgery rebuilt, any batch size;
the printed parity figure is recomputed here from a model rebuilt independently; a bad --format or a failed
parity check writes nothing."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re

import pytest
import torch
from tiny import quiet_trainer

from conftest import qualified_recipe

TINY = {"backbone_options": {"widths": [4, 8]}}
IMAGE_SIZE = 16
PARITY = re.compile(r"parity: max \|Δprob\| = (\S+) \(≤ 1e-4\)")


def callbacks(pkg):
    return importlib.import_module(f"{pkg.__name__}.callbacks")


def cli_main(pkg, args: list[str]):
    """`python -m <package> ...` in-process: cli.main dispatches `export` to its module."""
    return importlib.import_module(f"{pkg.__name__}.cli").main(args)


# name -> (model options, data.preprocess, the recipes the export command is given besides configs/default.yaml)
CASES = {
    "prelu-standardize": (TINY, "standardize", ("preprocess/standardize", "activation/prelu")),
    "default": ({}, "published", ()),  # digits publishes no statistics: measured on the training split
    "resnet18": ({"backbone": "resnet18"}, "published", ()),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def checkpoint(pkg, case, tmp_path_factory):
    return train_checkpoint(pkg, case, tmp_path_factory.mktemp("export") / f"{case}.ckpt")


@pytest.fixture(scope="module")
def prelu_checkpoint(pkg, tmp_path_factory):
    return train_checkpoint(pkg, "prelu-standardize", tmp_path_factory.mktemp("refusals") / "prelu-standardize.ckpt")


def train_checkpoint(pkg, case: str, path):
    """3 SGD steps on digits with the case's model and pre-processing (and every activation swapped to PReLU
    for prelu-standardize, as the recipe does), saved at `path`."""
    options, preprocess, recipes = CASES[case]
    torch.manual_seed(0)
    # A small LR: 3 steps at the default 0.1 saturate a resnet18 into one class, where parity would be trivial.
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=IMAGE_SIZE,
                                optimizer=functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9), **options)
    data = pkg.ImageDataModule("digits", image_size=IMAGE_SIZE, batch_size=32, preprocess=preprocess)
    swap = [callbacks(pkg).ActivationSwap("prelu", prelu_init=0.25)] if "activation/prelu" in recipes else []
    trainer = quiet_trainer(callbacks=swap, max_steps=3, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def reference(pkg, case, checkpoint):
    """(raw test images in [0, 1], the checkpoint's probabilities on them, the network alone on raw images),
    rebuilt by hand: the module, its PReLU swap (if any), the weights; the DataModule's restored statistics."""
    _, preprocess, recipes = CASES[case]
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = pkg.ImageClassifier(**saved["hyper_parameters"])
    if "activation/prelu" in recipes:
        callbacks(pkg).ActivationSwap("prelu").setup(None, model, "test")
    model.load_state_dict(saved["state_dict"])
    model.eval()
    data = pkg.ImageDataModule("digits", image_size=IMAGE_SIZE, batch_size=32, preprocess=preprocess)
    data.load_state_dict(saved["ImageDataModule"])
    data.setup("test")
    images, _ = next(iter(data.test_dataloader()))
    raw = torch.stack([data.splits.test[i][0] for i in range(len(images))])  # digits: float [0, 1] at image size
    with torch.no_grad():
        return raw, model(images).softmax(-1), model(raw).softmax(-1)


def export(pkg, project, capsys, checkpoint, output, fmt: str, recipes=CASES["prelu-standardize"][2]) -> tuple[float, list[str]]:
    """`<slug> export` in-process (through cli.main's dispatch); the printed parity figure and the output lines."""
    configs = [project / "configs/default.yaml",
               *(qualified_recipe(pkg, project / f"recipes/{recipe}.yaml", output.parent.parent) for recipe in recipes)]
    args = ["export", *[item for c in configs for item in ("--config", str(c))], "--ckpt_path", str(checkpoint),
            "--format", fmt, "--output", str(output)]
    cli_main(pkg, args)
    lines = capsys.readouterr().out.strip().splitlines()
    found = [PARITY.search(line) for line in lines]
    figures = [float(m.group(1)) for m in found if m]
    assert len(figures) == 1, lines
    return figures[0], lines


def check_file(run, reference, printed: float) -> None:
    raw, probabilities, without_preprocessing = reference
    with torch.no_grad():
        out = run(raw)
        recomputed = (out - probabilities).abs().max().item()
        assert printed <= 1e-4 and recomputed <= 1e-4, (printed, recomputed)
        assert torch.allclose(out.sum(-1), torch.ones(len(raw)), atol=1e-5)  # probabilities, not logits
        # The pre-processing is in the graph: a file without it (the network fed raw images) would fail this bar.
        assert (without_preprocessing - probabilities).abs().max().item() > 1e-4
        for batch in (1, 5):  # dynamic batch size
            assert run(raw[:batch]).shape == (batch, 10)
            assert (run(raw[:batch]) - probabilities[:batch]).abs().max().item() <= 1e-4


def test_export_onnx_runs_in_onnxruntime_with_parity(pkg, project, case, checkpoint, reference, tmp_path, capsys,
                                                     monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "model.onnx"
    printed, lines = export(pkg, project, capsys, checkpoint, output, "onnx", CASES[case][2])
    assert lines[-1] == f"exported: {output}"
    assert "onnxruntime" in next(line for line in lines if line.startswith("parity:"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # one file, weights inside
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    check_file(lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0]), reference, printed)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_torchscript_with_parity(pkg, project, case, checkpoint, reference, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "model.pt"
    printed, lines = export(pkg, project, capsys, checkpoint, output, "torchscript", CASES[case][2])
    assert lines[-1] == f"exported: {output}"
    check_file(torch.jit.load(str(output)), reference, printed)


def test_export_refuses_a_bad_format_and_a_failed_parity_writing_nothing(pkg, project, prelu_checkpoint, tmp_path, capsys,
                                                                         monkeypatch):
    checkpoint = prelu_checkpoint
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        cli_main(pkg, ["export", "--ckpt_path", str(checkpoint), "--format", "tflite"])
    assert "--format tflite" in str(refused.value) and "onnx" in str(refused.value) and "torchscript" in str(refused.value)
    # Without the onnx packages: one message naming the extra that installs them.
    find_spec = importlib.util.find_spec
    with monkeypatch.context() as patched:
        patched.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else find_spec(name, *a))
        with pytest.raises(SystemExit) as no_onnx:
            cli_main(pkg, ["export", "--ckpt_path", str(checkpoint), "--format", "onnx"])
    assert "pip install -e '.[export]'" in str(no_onnx.value)
    # A parity failure (forced: the file's answers shifted by 1e-3) exits with the figure and leaves no file.
    export_module = importlib.import_module(f"{pkg.__name__}.export")
    real = export_module.export_model

    def shifted(*args, **kwargs):
        run, runner = real(*args, **kwargs)
        return (lambda x: run(x) + 1e-3), runner

    monkeypatch.setattr(export_module, "export_model", shifted)
    with pytest.raises(SystemExit) as failed:
        export(pkg, project, capsys, checkpoint, tmp_path / "model.pt", "torchscript")
    assert "1.00e-03" in str(failed.value) and "nothing was written" in str(failed.value)
    assert list(tmp_path.iterdir()) == []
