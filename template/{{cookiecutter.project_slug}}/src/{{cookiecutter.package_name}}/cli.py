"""The project's command line: LightningCLI over ImageClassifier and ImageDataModule.

Installed as `lightning`, `<project-slug>` and `python -m <package>`, all the same CLI:
    lightning fit  --config configs/default.yaml [--config recipes/<group>/<name>.yaml ...]
    lightning test --config configs/default.yaml --ckpt_path best
    lightning test --config configs/default.yaml --ensemble a.ckpt b.ckpt   (E5: several checkpoints as one model)
    lightning predict --config configs/default.yaml --ckpt_path best --data.predict_root photos/   (-> predictions.csv)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pickle
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Literal

import torch
import yaml
from jsonargparse import DefaultHelpFormatter
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from . import registry  # noqa: F401  (configs name classes by short name)
from .backbones import pretrained_data_config
from .callbacks import run_folder  # the run-folder rule, shared with the callbacks
from .datamodule import ImageDataModule
from .module import ImageClassifier
from .prediction import PredictionWriter, checkpoint_image_size
from .preflight import (
    check_checkpoint_file,
    check_exclusive_recipes,
    check_learning_rate,
    check_recipe_requirements,
    check_same_project,
    config_files_in,
    continue_logger_run,
    drop_logging_callbacks,
    find_checkpoint,
    replaced_options,
)

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# The project's other commands, `<slug> <command> ...` (each with its own --help): module, one-line help.
COMMANDS = {
    "ensemble": ("ensemble.command", "E1/E2/E3/E5: test, predict, seeds, topk with several checkpoints as one model"),
    "audit": ("audit", "A7: which augmentations change what a trained model sees"),
    "tanda": ("tanda.__main__", "A5: learn an augmentation policy (TANDA) and compare it"),
    "compare": ("compare.command", "which recipe helps your data: arms x seeds/folds, paired differences with 95% CIs"),
    "export": ("export", "a checkpoint as ONNX or TorchScript: raw [0, 1] images in, class probabilities out"),
}


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config in the run's own folder and makes it the logger's run config.

    Lightning's default writes `config.yaml` to `trainer.log_dir`, which for W&B is the shared
    root, so a second fit in the same folder fails (Lightning issue 17168). One file per run
    never collides.
    """

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if self.already_saved or trainer.fast_dev_run:
            return
        folder = trainer.strategy.broadcast(run_folder(trainer) if trainer.is_global_zero else None)
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(folder / self.config_filename), skip_none=False, overwrite=True, multifile=self.multifile)
            for logger in trainer.loggers:
                logger.log_hyperparams(self.config.clone().as_dict())
        self.already_saved = True


def fixed_choices(classes) -> list[str]:
    """One line per class with `Literal[...]` options: `Class  option: a|b|c; other: x|y`."""
    lines = []
    for cls in classes:
        hints = typing.get_type_hints(cls.__init__)
        found = []
        for name, hint in hints.items():
            members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
            literal = [m for m in members if typing.get_origin(m) is typing.Literal]
            if literal:
                found.append(f"{name}: {'|'.join(map(str, typing.get_args(literal[0])))}")
        if found:
            lines.append(f"  {cls.__name__:<22} {'; '.join(found)}")
    return lines


def callbacks_epilog() -> str:
    """`--help` of fit/validate/test/predict ends with the fixed choices of every trick callback's options
    (jsonargparse lists a class's options only under `--trainer.callbacks.help <class>`)."""
    from pytorch_lightning import Callback

    classes = [c for c in vars(registry.callbacks).values() if isinstance(c, type) and issubclass(c, Callback)
               and c.__module__.startswith(registry.callbacks.__name__)]
    lines = fixed_choices(sorted(classes, key=lambda c: c.__name__))
    return ("Options with fixed choices of the trick callbacks (all options of one: --trainer.callbacks.help CLASS):\n"
            + "\n".join(lines))


class _KeepLineBreaks(DefaultHelpFormatter):
    """Description and epilog printed as written (one line per callback), not re-wrapped into a paragraph."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


class CLI(LightningCLI):
    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("auto_configure_optimizers", False)
        # jsonargparse gives subcommand parsers their parent's formatter: set it on both.
        epilog = {"epilog": callbacks_epilog(), "formatter_class": _KeepLineBreaks}
        per_command = {name: dict(epilog) for name in SUBCOMMANDS}
        per_command["formatter_class"] = _KeepLineBreaks
        kwargs.setdefault("parser_kwargs", per_command if run else epilog)
        self._argv: list[str] = []
        self._backbone_statistics: tuple | None = None
        super().__init__(ImageClassifier, ImageDataModule, args=args, run=run, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        argv = sys.argv[1:] if args is None else args
        if isinstance(argv, list):
            self._argv = [str(a) for a in argv]
            check_recipe_requirements(config_files_in(argv))
            for note in replaced_options(self._argv):
                print(note, flush=True)
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.image_size", "model.image_size")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_channels", "model.in_channels", apply_on="instantiate")
        # E5: `test|predict --ensemble a.ckpt b.ckpt ...` evaluates several checkpoints as one model, with this
        # config's data and trainer options (every --data.* / --trainer.* option works, parsed as usual).
        parser.add_argument("--ensemble", nargs="+", default=None, metavar="CKPT",
                            help="test/predict: checkpoint files or run folders evaluated as one model (E5)")
        parser.add_argument("--ensemble_combine", type=Literal["probs", "logits", "vote"], default="probs",
                            help="how the --ensemble members combine")
        parser.add_argument("--ensemble_weights", type=str | None, default=None,
                            help="'val' (validation accuracy) or one weight per --ensemble member, comma-separated")
        parser.add_argument("--ensemble_output", type=str, default="predictions.pt",
                            help="predict --ensemble: where the probabilities go")

    def instantiate_classes(self) -> None:
        # The classes check their own arguments and name the value and the fix (ValueError,
        # FileNotFoundError for data); that message is the whole answer, not the last line of a
        # traceback through jsonargparse. Nothing has been written yet at this point.
        try:
            super().instantiate_classes()
            if self._backbone_statistics:
                self.datamodule.use_backbone_statistics(*self._backbone_statistics)
            if self._section().get("ensemble"):
                self._evaluate_an_ensemble()
            for callback in self.trainer.callbacks:  # checks a callback can make before anything runs or is written
                if callable(getattr(callback, "check_data", None)):
                    callback.check_data(self.datamodule)
        except (ValueError, FileNotFoundError, MisconfigurationException) as error:
            raise SystemExit(f"error: {error}") from error

    def _section(self):
        # run=False (the Python API) has no subcommand level in the config.
        return self.config[self.subcommand] if self.subcommand else self.config

    @staticmethod
    def _take_image_size(config, size: int, option: str, what: str) -> None:
        """Evaluate at the size the weights were trained at (the data and, when set, the model's image_size)."""
        if size == config.data.image_size:
            return
        print(f"{option}: data.image_size={size}, {what} (the config says {config.data.image_size}).", flush=True)
        config.data.image_size = size
        if "image_size" in (config.get("model") or {}):
            config.model.image_size = size

    def _load_the_ensemble(self, config) -> None:
        """E5: the EnsembleModule of `--ensemble`; the data take the members' image size (what they were trained at)."""
        from .ensemble import EnsembleModule, announce, parse_weights

        self._ensemble = EnsembleModule(list(config.ensemble), combine=config.ensemble_combine,
                                        weights=parse_weights(config.ensemble_weights))
        self._take_image_size(config, self._ensemble.image_size, "--ensemble", "the members' input size")
        announce(self._ensemble)

    def _data_option_given(self, key: str) -> bool:
        """Whether the command line or one of its --config files sets `data.<key>` (the parsed config
        holds the default and a given value alike)."""
        if any(arg == f"--data.{key}" or arg.startswith(f"--data.{key}=") for arg in self._argv):
            return True
        for path in config_files_in(self._argv):
            try:
                data = (yaml.safe_load(Path(path).read_text()) or {}).get("data")
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            if isinstance(data, dict) and (key in data or key in (data.get("init_args") or {})):
                return True
        return False

    def _take_backbone_data_config(self, config) -> None:
        """A pretrained timm backbone brings its own data config (timm's mean, std, input size): the
        images are resized to its input size unless `data.image_size` is set on the command line or in
        a config file, and `data.preprocess=published` normalizes with its mean/std (any other
        `data.preprocess` is the config overriding them). Trained from scratch, the dataset's own size
        and statistics apply: there are no weights to match."""
        model = config.get("model") or {}
        pretrained = bool((model.get("backbone_options") or {}).get("pretrained")) or bool(model.get("pretrained_checkpoint"))
        published = pretrained_data_config(str(model.get("backbone") or "")) if pretrained else None
        if published is None:
            return
        size = published["input_size"][-1]
        if size != config.data.image_size and not self._data_option_given("image_size"):
            self._take_image_size(config, size, "model.backbone", f"{model.backbone}'s pretrained input size")
        if config.data.preprocess == "published":
            self._backbone_statistics = (published["mean"], published["std"], str(model.backbone))
            print(f"model.backbone: normalizing with {model.backbone}'s pretrained mean {published['mean']} and std "
                  f"{published['std']} (set data.preprocess to use the dataset's own).", flush=True)

    def _evaluate_an_ensemble(self) -> None:
        """Replace the model by the ensemble, on a trainer without the training callbacks (the members were
        built from their own checkpoints, tricks included) and without a logger."""
        self.model = self._ensemble
        if self.datamodule.num_classes != self.model.num_classes:
            raise ValueError(f"--ensemble: the members predict {self.model.num_classes} classes, the data have "
                             f"{self.datamodule.num_classes}; use the config the members were trained with.")
        self.save_config_callback = None
        self.trainer = self.instantiate_trainer(callbacks=[], logger=False, enable_checkpointing=False)

    def after_test(self) -> None:
        if self._section().get("ensemble"):
            from .ensemble import report_test

            report_test(self.trainer.callback_metrics, len(self.model.members))

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # `predict --data.predict_root`: predictions.csv without a recipe (a writer the config names is kept).
        if (self.subcommand == "predict" and getattr(self.datamodule, "predict_files", None) is not None
                and not any(isinstance(c, BasePredictionWriter) for c in trainer.callbacks)):
            trainer.callbacks.append(PredictionWriter(top_k=self.datamodule.predict_top_k))
        return trainer

    def _prepare_predict(self, config) -> None:
        """`predict`: the data at the checkpoint's input size; with data.predict_root the rows stream to
        predictions.csv instead of being kept in memory (unless --return_predictions says otherwise)."""
        size = checkpoint_image_size(Path(config.ckpt_path), config.weights_only) if config.get("ckpt_path") else None
        if size is not None:
            self._take_image_size(config, size, "ckpt_path", "the checkpoint's input size")
        if config.data.get("predict_root") and config.get("return_predictions") is None:
            config.return_predictions = False

    def after_predict(self) -> None:
        if self._section().get("ensemble") and self.trainer.predict_loop.predictions:
            from .ensemble import save_predictions

            save_predictions(torch.cat(self.trainer.predict_loop.predictions), self.model, Path(self._section().ensemble_output))

    def before_instantiate_classes(self) -> None:
        config = self._section()
        if config.get("ensemble") and self.subcommand not in ("test", "predict"):
            raise SystemExit(f"error: --ensemble evaluates checkpoints: use it with test or predict, not {self.subcommand}.")
        if config.get("ensemble") and config.get("ckpt_path"):
            raise SystemExit("error: --ensemble and --ckpt_path both name the weights to evaluate: give one of them.")
        if config.get("ensemble"):
            try:
                self._load_the_ensemble(config)
            except (ValueError, FileNotFoundError) as error:
                raise SystemExit(f"error: {error}") from error
        check_exclusive_recipes([Path(str(p)) for p in config.get("config") or []])
        trainer = config.trainer
        accelerator = str(trainer.accelerator)
        on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
        if trainer.sync_batchnorm and on_cpu:
            # torch's SyncBatchNorm refuses CPU tensors; each process keeps its own statistics instead.
            warnings.warn("trainer.sync_batchnorm=true needs GPUs; turned off for this CPU run.", stacklevel=1)
            trainer.sync_batchnorm = False
        if trainer.barebones:
            trainer.callbacks = drop_logging_callbacks(trainer.callbacks)
            if trainer.fast_dev_run:
                print("trainer.fast_dev_run checks the wiring, which barebones mode refuses: barebones is off for this run.")
                trainer.barebones = False
        check_learning_rate(config.model)
        self._take_backbone_data_config(config)
        ckpt = config.get("ckpt_path")
        if ckpt in ("best", "last"):
            root = Path(trainer.default_root_dir or ".")
            found = find_checkpoint(root, ckpt)
            if found is not None:
                print(f"ckpt_path={ckpt}: using {found}", flush=True)
                config.ckpt_path = str(found)
            elif self.subcommand == "fit" and ckpt == "last":
                print(f"ckpt_path=last: no checkpoints/last.ckpt under {root.resolve()}; starting a new run.", flush=True)
                config.ckpt_path = None
            else:
                raise SystemExit(
                    f"ckpt_path={ckpt}: no checkpoints/{ckpt}.ckpt under {root.resolve()} (trainer.default_root_dir). "
                    "Train first with `lightning fit --config configs/default.yaml`, or pass the checkpoint's path."
                )
        if config.get("ckpt_path"):
            check_checkpoint_file(Path(config.ckpt_path))
        if self.subcommand == "fit" and config.ckpt_path:
            continue_logger_run(trainer.logger, Path(config.ckpt_path))
        elif self.subcommand in ("validate", "test", "predict") and config.get("weights_only") is None:
            config.weights_only = True  # evaluating a checkpoint never runs code pickled into it
        if self.subcommand == "predict":
            self._prepare_predict(config)


# What torch's collectives raise on the other ranks when one process dies (gloo, NCCL, the store).
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "remote worker", "NCCL communicator was aborted",
             "collective operation timeout", "Broken pipe")


def lost_a_worker(error: BaseException) -> bool:
    return isinstance(error, getattr(torch.distributed, "DistError", ())) or any(text in str(error) for text in PEER_LOST)


def main(args: list[str] | None = None) -> CLI:
    """Entry point of `<project-slug>` and `python -m <package>` (and, through `lightning_main`, `lightning`)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] and argv[0] in COMMANDS:
        return importlib.import_module(f".{COMMANDS[argv[0]][0]}", __package__).main(argv[1:])
    if argv[:1] in (["-h"], ["--help"]):
        print("Other commands (each with --help):", *(f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()),
              sep="\n", end="\n\n")
    try:
        return CLI(args=args)
    except RuntimeError as error:
        if not lost_a_worker(error):
            raise
        raise SystemExit(
            f"error: a DDP worker stopped ({str(error).splitlines()[0][:300]}). Its own output above says why (out of "
            "memory, killed by the scheduler, a bug). The checkpoints written so far are intact: fix the cause and "
            "continue with `lightning fit ... --ckpt_path last`."
        ) from error
    except FloatingPointError as error:  # NanGuard: the diagnosis is the message, not the traceback
        raise SystemExit(str(error)) from error
    except pickle.UnpicklingError as error:  # torch.load(weights_only=True) met pickled code
        raise SystemExit(
            f"Refused to load the checkpoint: it carries pickled objects that could run code ({str(error).splitlines()[0]}). "
            "Load only checkpoints you trust; if you trust this one, pass --weights_only=false."
        ) from error


def _other_lightning_command():
    """The `lightning` command of another installed package (lightning-sdk, LitServe), if any."""
    ours = __name__.split(".")[0]
    for entry in importlib.metadata.entry_points(group="console_scripts", name="lightning"):
        if not entry.value.startswith(ours + "."):
            return entry.load()
    return None


def lightning_main() -> None:
    """Entry point of `lightning`: fit/validate/test/predict are ours, anything else is handed on."""
    argv = sys.argv[1:]
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        other = _other_lightning_command()
        if other is not None:
            sys.exit(other())
    check_same_project(argv)
    main()
