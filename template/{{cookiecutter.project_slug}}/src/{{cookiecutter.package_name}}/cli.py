"""The project's command line: LightningCLI over ImageClassifier and ImageDataModule.

Installed as `lightning`, `<project-slug>` and `python -m <package>`, all the same CLI:
    lightning fit  --config configs/default.yaml [--config recipes/<group>/<name>.yaml ...]
    lightning test --config configs/default.yaml --ckpt_path best
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pickle
import sys
import warnings
from pathlib import Path

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from . import registry  # noqa: F401  (configs name classes by short name)
from .callbacks import run_folder  # the run-folder rule, shared with the callbacks
from .datamodule import ImageDataModule
from .module import ImageClassifier
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
)

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# The project's other commands, `<slug> <command> ...` (each with its own --help): module, one-line help.
COMMANDS = {
    "ensemble": ("ensemble.command", "E1/E2/E3/E5: test, predict, seeds, topk with several checkpoints as one model"),
    "audit": ("audit", "A7: which augmentations change what a trained model sees"),
    "tanda": ("tanda.__main__", "A5: learn an augmentation policy (TANDA) and compare it"),
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


class CLI(LightningCLI):
    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(ImageClassifier, ImageDataModule, args=args, run=run, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        argv = sys.argv[1:] if args is None else args
        if isinstance(argv, list):
            check_recipe_requirements(config_files_in(argv))
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.image_size", "model.image_size")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_channels", "model.in_channels", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        # The classes check their own arguments and name the value and the fix (ValueError,
        # FileNotFoundError for data); that message is the whole answer, not the last line of a
        # traceback through jsonargparse. Nothing has been written yet at this point.
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, MisconfigurationException) as error:
            raise SystemExit(f"error: {error}") from error

    def before_instantiate_classes(self) -> None:
        # run=False (the Python API) has no subcommand level in the config.
        config = self.config[self.subcommand] if self.subcommand else self.config
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


# What torch's collectives raise on the other ranks when one process dies (gloo, NCCL, the store).
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "remote worker", "NCCL communicator was aborted",
             "collective operation timeout", "Broken pipe")


def lost_a_worker(error: BaseException) -> bool:
    return isinstance(error, getattr(torch.distributed, "DistError", ())) or any(text in str(error) for text in PEER_LOST)


def ensemble_arguments(argv: list[str]) -> list[str]:
    """`test|predict ... --ensemble a.ckpt b.ckpt ...` as arguments of `python -m <package>.ensemble` (E5)."""
    command, rest, sources, translated = argv[0], argv[1:], [], []
    start = rest.index("--ensemble")
    sources, i = [], start + 1
    while i < len(rest) and not rest[i].startswith("--"):
        sources.append(rest[i])
        i += 1
    others = rest[:start] + rest[i:]
    for j, arg in enumerate(others):
        key, _, value = arg.partition("=")
        if not value and not arg.startswith("--"):
            continue  # the value of the previous option
        value = value or (others[j + 1] if j + 1 < len(others) else "")
        if key in ("--config", "-c"):
            translated += ["--config", value]
        elif key in ("--trainer.accelerator", "--trainer.devices"):
            translated.append(f"--{key.split('.')[1]}={value}")
        elif key.startswith("--data."):
            translated += ["--data", f"{key.removeprefix('--data.')}={value}"]
        elif key in ("--ensemble.combine", "--ensemble.weights"):
            translated.append(f"--{key.split('.')[1]}={value}")
        else:
            raise SystemExit(f"{key}: not an option of `{command} --ensemble` (it takes --config, --data.*, "
                             "--trainer.accelerator/devices, --ensemble.combine/weights); see python -m <package>.ensemble --help.")
    if not sources:
        raise SystemExit("--ensemble: give the member checkpoints (files or run folders) after it.")
    return [command, *sources, *translated]


def main(args: list[str] | None = None) -> CLI:
    """Entry point of `<project-slug>` and `python -m <package>`; `test|predict --ensemble ckpts...`
    evaluates several checkpoints as one model (E5, the EnsembleModule)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] and argv[0] in COMMANDS:
        return importlib.import_module(f".{COMMANDS[argv[0]][0]}", __package__).main(argv[1:])
    if argv[:1] in (["-h"], ["--help"]):
        print("Other commands (each with --help):", *(f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()),
              sep="\n", end="\n\n")
    if argv[:1] in (["test"], ["predict"]) and "--ensemble" in argv:
        from .ensemble import main as ensemble_main

        return ensemble_main(ensemble_arguments(argv))
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
