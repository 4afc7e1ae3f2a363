"""Deployment — a trained checkpoint as one self-contained model file (ONNX or TorchScript).

    <slug> export --config configs/default.yaml [--config recipes/<group>/<name>.yaml ...]
                  --ckpt_path best|last|FILE --format onnx|torchscript [--output model.onnx] [--data.root ...]

What the file computes: raw images scaled to [0, 1] — float32 (N, C, H, W) at the checkpoint's
image size, any batch size N — go through the run's pre-processing (P1–P4: the shift/scale or
whitening statistics the DataModule measured on the training split, restored from the checkpoint),
then the network, then a softmax: the output (N, num_classes) holds class PROBABILITIES, not logits.
So a deployment only has to resize to the image size and scale pixels to [0, 1] (`ToDtype(scale=True)`).
Input and output are named `images` and `probabilities`.

How the model is rebuilt: exactly as `lightning predict --ckpt_path ...` builds it. The project's CLI
is built in-process from the same `--config` files (recipes included; give the ones the run was
trained with), on the CPU in float32, with the checkpoint's architecture options (backbone, its
options, image size); `Trainer.predict` on one batch then runs every callback's `setup` —
activation surgery (recipes activation/*) rewrites the modules there — and restores the weights
and the DataModule's pre-processing statistics. `CompileModel` (trainer/compile) is left out —
compilation is a speed trick, the exported graph is compiled by its runtime — and so are the
checkpoint writers (nothing to save). The file holds one plain forward pass: test-time augmentation
(recipes/evaluate/tta.yaml) is not in it.

Formats:
    onnx: `torch.onnx.export(dynamo=True)`, the torch.export-based exporter — torch's default since
        2.9; the TorchScript-based one (`dynamo=False`) still works offline but warns it will be
        removed. Needs `onnx` and `onnxscript` (`pip install -e '.[export]'`); one file (weights
        inside, no `.onnx.data` beside it). Runs in onnxruntime, TensorRT, OpenVINO, browsers.
    torchscript: `torch.jit.trace`, loaded with `torch.jit.load` in Python or libtorch (C++) without
        this project. torch marks TorchScript deprecated in favour of torch.export, but it is still
        what libtorch loads.

Parity check: the written file is run on the raw first test batch and on one image alone (the
dynamic batch size) and compared with the checkpoint's model in eval mode on the same images through
the DataModule's eval pipeline; `parity: max |Δprob| = X (≤ 1e-4)` is printed, and
above 1e-4 the command fails and removes the file. An ONNX file is run by onnxruntime when it is
installed; otherwise the check runs the torch.export graph the ONNX file was translated from, and
says so. The file is written under a temporary name and renamed only once the check passes, so a
failed export never leaves a file (nor replaces an older one).

Why here: Lightning's `to_onnx` / `to_torchscript` export `forward` — logits of already
pre-processed inputs — and rebuild no trick callback's architecture; the statistics that make a
checkpoint usable live in the DataModule's checkpoint state, which only this project knows.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torchvision.transforms import v2

from .callbacks import CompileModel
from .cli import CLI
from .datamodule import ImageDataModule, TransformedDataset
from .ensemble.checkpoints import load_checkpoint, run_config
from .transforms.preprocessing import Preprocess, apply_preprocessing

__all__ = ["ExportedClassifier", "export_model", "main", "rebuild_from_checkpoint"]

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = get_args(Format)
DEFAULT_OUTPUT = {"onnx": "model.onnx", "torchscript": "model.pt"}
TOLERANCE, TOLERANCE_TEXT = 1e-4, "1e-4"  # max |Δprob| between the file and the checkpoint's model
# The model is rebuilt on the CPU in float32, with no logger or progress output, predicting one batch.
PREDICT_ONE_BATCH = [
    "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
    "--trainer.precision=32-true", "--trainer.sync_batchnorm=false", "--trainer.logger=false",
    "--trainer.limit_predict_batches=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
]


class ExportedClassifier(nn.Module):
    """Raw images in [0, 1] → the run's pre-processing → `network` → softmax class probabilities.

    The statistics are buffers, so they travel inside the exported file; the formulas are the
    DataModule's own (`apply_preprocessing`), so the file normalizes exactly as training did.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> model = ExportedClassifier(net, "standardize", {"shift": torch.tensor([0.5]), "scale": torch.tensor([0.25])})
        >>> probabilities = model(torch.rand(2, 1, 2, 2))
        >>> probabilities.shape, torch.allclose(probabilities.sum(dim=-1), torch.ones(2))
        (torch.Size([2, 3]), True)
    """

    def __init__(self, network: nn.Module, preprocess: str, preprocess_state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.network, self.preprocess = network, preprocess
        self.state_names = sorted(preprocess_state)
        for name, value in preprocess_state.items():
            self.register_buffer(name, value.detach().float().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        state = {name: getattr(self, name) for name in self.state_names}
        return self.network(apply_preprocessing(images, self.preprocess, state)).softmax(dim=-1)


class _RebuildCLI(CLI):
    """The project's CLI without a subcommand, set up to rebuild one checkpoint's model: `ckpt_path`
    resolves as `lightning test --ckpt_path best|last` does, then the checkpoint's architecture
    options replace the config's (as Lightning's CLI does for a checkpoint given by its path)."""

    def __init__(self, args: list[str]) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().__init__(args=args, run=False, save_config_callback=None)

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        # The options of `lightning test`: a run's saved config.yaml names them, so it can be given as --config.
        parser.add_argument("--ckpt_path", type=str | None, default=None)
        parser.add_argument("--weights_only", type=bool | None, default=None)

    def before_instantiate_classes(self) -> None:
        config = self.config
        super().before_instantiate_classes()  # resolves best|last, checks the file
        self.ckpt_path = Path(config.ckpt_path)
        try:
            hparams = load_checkpoint(self.ckpt_path)["hyper_parameters"]
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"error: {error}") from None
        if config.data.image_size != hparams.get("image_size", config.data.image_size):
            print(f"data.image_size={hparams['image_size']}, the checkpoint's input size (the config says "
                  f"{config.data.image_size}).", flush=True)
        config.data.image_size = config.model.image_size = hparams.get("image_size", config.data.image_size)
        config.model.backbone = hparams.get("backbone", config.model.backbone)
        options = hparams.get("backbone_options")
        # The checkpoint holds every weight: fetching pretrained ones (T4) again would be wasted, or need the network.
        config.model.backbone_options = {**options, "weights": None} if isinstance(options, dict) and options.get("weights") else options
        config.model.pretrained_checkpoint = None


def rebuild_from_checkpoint(configs: Sequence[str], ckpt_path: str, cli_args: Sequence[str] = ()):
    """(model in eval mode, its DataModule with the checkpoint's statistics, the checkpoint file), rebuilt
    as `lightning predict` does (module docstring)."""
    args = [item for config in configs for item in ("--config", config)] + list(cli_args)
    cli = _RebuildCLI([*args, f"--ckpt_path={ckpt_path}", *PREDICT_ONE_BATCH])
    model, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, (CompileModel, ModelCheckpoint))]
    try:
        trainer.predict(model, datamodule=datamodule, ckpt_path=cli.ckpt_path, weights_only=True, return_predictions=False)
    except RuntimeError as error:
        if "loading state_dict" not in str(error):
            raise
        saved = run_config(cli.ckpt_path)
        raise SystemExit(
            f"error: {cli.ckpt_path} does not fit the model these --config files build "
            f"({str(error).splitlines()[1].strip()[:300]}). Give the configs and recipes the run was trained with "
            f"(an activation recipe changes the layers){f', or its saved config: --config {saved}' if saved else ''}."
        ) from None
    return model.eval(), datamodule, cli.ckpt_path


def first_test_images(datamodule: ImageDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test batch twice: raw, as the exported model takes it (the eval pipeline without its
    pre-processing), and through the whole eval pipeline, as the checkpoint's model sees it in `lightning test`."""
    *base, preprocess = datamodule.eval_transform.transforms
    assert isinstance(preprocess, Preprocess), "the eval pipeline ends with the pre-processing"
    count = min(datamodule.batch_size, len(datamodule.splits.test))
    pipelines = (v2.Compose(base or [v2.Identity()]), datamodule.eval_transform)
    datasets = [TransformedDataset(datamodule.splits.test, pipeline) for pipeline in pipelines]
    raw, seen = (torch.stack([d[i][0].as_subclass(torch.Tensor).float() for i in range(count)]) for d in datasets)
    return raw, seen


def export_model(model: nn.Module, example: torch.Tensor, path: Path, format: Format):
    """Write `model` to `path`, batch dimension dynamic; returns a callable that runs the written file
    (a tensor in, probabilities out) and the name of what runs it."""
    example = example if len(example) > 1 else example.expand(2, *example.shape[1:])  # batch 1 would be specialized
    if format == "torchscript":
        with warnings.catch_warnings():  # deprecated upstream in favour of torch.export (module docstring)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|load)")
            torch.jit.trace(model, example).save(str(path))
            return torch.jit.load(str(path)), "torch.jit.load"
    program = torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                                input_names=["images"], output_names=["probabilities"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is not installed: the ONNX file itself is not run; the parity check runs the "
              "torch.export graph it was translated from (pip install onnxruntime to run the file).", flush=True)
        return program.exported_program.module(), "the torch.export graph"
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return (lambda images: torch.from_numpy(session.run(None, {"images": images.numpy()})[0])), "onnxruntime"


def parity(run_exported, images: torch.Tensor, reference: torch.Tensor) -> float:
    """max |Δprob| between the exported model and `reference` on `images`, and on the first image alone."""
    with torch.no_grad():
        batch = (run_exported(images) - reference).abs().max()
        single = (run_exported(images[:1]) - reference[:1]).abs().max()
    return float(torch.maximum(batch, single))


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    title, _usage, contract = __doc__.split("\n\n")[:3]
    parser = argparse.ArgumentParser(
        prog="<slug> export", description=f"{title}\n\n{contract}", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other options (--data.root DIR, --trainer.default_root_dir DIR, ...) go to the project's CLI as "
               "`lightning predict` takes them.")
    parser.add_argument("--config", action="append", default=None, metavar="YAML",
                        help="the run's config and recipes, as given to `lightning fit` (repeat it), or the run's "
                             "saved runs/<project>/<run>/config.yaml; default: configs/default.yaml")
    parser.add_argument("--ckpt_path", default="best",
                        help="best | last (the newest under trainer.default_root_dir) or a .ckpt file")
    parser.add_argument("--format", default="onnx", help=f"{' | '.join(FORMATS)}")
    parser.add_argument("--output", default=None, help="the file to write (default: model.onnx / model.pt)")
    args, cli_args = parser.parse_known_args(argv)
    if args.format not in FORMATS:
        raise SystemExit(f"--format {args.format}: choose onnx (onnxruntime, TensorRT, OpenVINO) or torchscript (libtorch).")
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if args.format == "onnx" and missing:
        raise SystemExit(f"--format onnx needs the {' and '.join(missing)} package(s): pip install -e '.[export]'")
    args.output = Path(args.output or DEFAULT_OUTPUT[args.format])
    if not args.output.parent.is_dir():
        raise SystemExit(f"--output {args.output}: the folder {args.output.parent} does not exist; create it or write elsewhere.")
    args.config = args.config or ["configs/default.yaml"]
    return args, cli_args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`<slug> export ...`: writes the file, prints the parity figure and, last, `exported: <path>`."""
    args, cli_args = parse_args(sys.argv[1:] if argv is None else argv)
    model, datamodule, ckpt_path = rebuild_from_checkpoint(args.config, args.ckpt_path, cli_args)
    images, seen = first_test_images(datamodule)
    with torch.no_grad():
        reference = model(seen).softmax(dim=-1)
    exported = ExportedClassifier(model.backbone, datamodule.preprocess, datamodule.preprocess_state).eval()
    partial = args.output.with_name(f".{args.output.name}.partial")
    try:
        run_exported, runner = export_model(exported, images, partial, args.format)
        difference = parity(run_exported, images, reference)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    print(f"parity: max |Δprob| = {difference:.2e} (≤ {TOLERANCE_TEXT}) on {len(images)} test images and on 1 alone, "
          f"file run by {runner}", flush=True)
    if not difference <= TOLERANCE:
        partial.unlink(missing_ok=True)
        raise SystemExit(
            f"error: the exported model's probabilities differ from the checkpoint's by {difference:.2e} "
            f"(> {TOLERANCE_TEXT}); nothing was written. An operator the exporter translates differently is the usual "
            f"cause: try the other --format, and report the backbone and recipes used."
        )
    os.replace(partial, args.output)
    print(f"exported: {args.output}", flush=True)
    return {"path": args.output, "parity": difference, "checkpoint": ckpt_path, "runner": runner}


if __name__ == "__main__":
    main(sys.argv[1:])
