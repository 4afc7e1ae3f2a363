"""The project's command line: LightningCLI over ImageClassifier and ImageDataModule.

Installed as `lightning`, `<project-slug>` and `python -m <package>`, all the same CLI:
    lightning fit  --config configs/default.yaml [--config recipes/<group>/<name>.yaml ...]
    lightning test --config configs/default.yaml --ckpt_path best
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pickle
import re
import sys
import warnings
import zipfile
from collections import defaultdict
from pathlib import Path

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from . import registry  # noqa: F401  (configs name classes by short name)
from .callbacks import run_folder  # the run-folder rule, shared with the callbacks
from .datamodule import ImageDataModule
from .module import ImageClassifier
from .recipe_info import RecipeInfo, merged_recipes, read_recipe

SUBCOMMANDS = ("fit", "validate", "test", "predict")
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


def active_recipes(config_files: list[Path]) -> dict[str, Path]:
    """Recipe name -> file for every recipe in effect: passed with --config, or merged into a
    config at generation (its header lists them; they live in `recipes/` beside `configs/`)."""
    active: dict[str, Path] = {}
    for path in config_files:
        if path.parent.parent.name == "recipes":
            active[f"{path.parent.name}/{path.stem}"] = path
        for name in merged_recipes(path.read_text()):
            active[name] = path.parent.parent / "recipes" / f"{name}.yaml"
    return active


def active_recipe_info(config_files: list[Path]) -> list[RecipeInfo]:
    """The header metadata of every active recipe that exists as a file."""
    return [read_recipe(path, path.parent.parent) for path in active_recipes(config_files).values() if path.is_file()]


def check_exclusive_recipes(config_files: list[Path]) -> None:
    """Fail before anything runs when two recipes claim the same slot (`# exclusive: <slot>`),
    e.g. two LR schedules or two init schemes: the later one would silently replace the other."""
    claims: dict[str, list[str]] = defaultdict(list)
    for info in active_recipe_info(config_files):
        if info.exclusive:
            claims[info.exclusive].append(info.name)
    for slot, names in claims.items():
        if len(names) > 1:
            raise SystemExit(
                f"Recipes {' and '.join(names)} cannot be combined: each sets the {slot}. Keep one of them."
            )


def config_files_in(argv: list[str]) -> list[Path]:
    """The files given with --config / -c on a command line."""
    files = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            files.append(arg.partition("=")[2])
        elif arg in ("--config", "-c") and i + 1 < len(argv):
            files.append(argv[i + 1])
    return [Path(f) for f in files]


def check_recipe_requirements(config_files: list[Path]) -> None:
    """A recipe that needs an optional package (`# requires: <extra>`, the project's extra of that
    name, e.g. logger/tensorboard) stops here, before the config is parsed, naming what to install."""
    for info in active_recipe_info([p for p in config_files if p.is_file()]):
        if info.requires and importlib.util.find_spec(info.requires) is None:
            raise SystemExit(f"error: recipe {info.name} needs the {info.requires} package, which is not installed. "
                             f"This project installs it with: pip install -e '.[{info.requires}]'")


def drop_logging_callbacks(specs):
    """Barebones mode refuses checkpointing and LR logging: drop those callbacks of the config
    (the default config's SafeCheckpoint, LearningRateMonitor) instead of failing."""
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

    def unwanted(spec) -> bool:
        module, _, name = str(getattr(spec, "class_path", "")).rpartition(".")
        cls = getattr(importlib.import_module(module), name, None) if module else None
        return isinstance(cls, type) and issubclass(cls, (ModelCheckpoint, LearningRateMonitor))

    kept = [spec for spec in specs or [] if not unwanted(spec)]
    if len(kept) != len(specs or []):
        print("trainer.barebones=true: checkpoint and LR-monitor callbacks dropped (barebones has no checkpoints or logs).")
    return kept


def check_checkpoint_file(path: Path) -> None:
    """A missing, truncated or corrupt checkpoint fails here with its name, before anything runs.
    (torch checkpoints are zip archives: testzip() checks every member's CRC.)"""
    if not path.is_file():
        raise SystemExit(f"ckpt_path={str(path)!r}: no such file. Give a .ckpt path, or best / last for the newest run's.")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        bad = str(error)
    if bad is not None:
        raise SystemExit(
            f"ckpt_path={str(path)!r} is truncated or corrupt ({bad}). Use another checkpoint of the run "
            "(best.ckpt, last.ckpt) or train again."
        )


def check_learning_rate(model) -> None:
    init_args = getattr(getattr(model, "optimizer", None), "init_args", None)
    lr = getattr(init_args, "lr", None) if init_args is not None else None
    if isinstance(lr, (int, float)) and not lr > 0:
        raise SystemExit(
            f"model.optimizer.init_args.lr={lr}: the learning rate must be positive; the lecture's starting point is 0.1."
        )


def continue_logger_run(logger, checkpoint: Path) -> None:
    """Resuming from `<save_dir>/<name>/<version>/checkpoints/x.ckpt` logs into the same run:
    the same W&B run id, the same CSV/TensorBoard version folder."""
    init_args = getattr(logger, "init_args", None)
    if init_args is None or checkpoint.parent.name != "checkpoints":
        return
    version = checkpoint.parent.parent.name
    if "id" in init_args and "version" in init_args and not (init_args.id or init_args.version):
        init_args.id = version  # WandbLogger
    elif "version" in init_args and init_args.version is None:
        init_args.version = version


def find_checkpoint(root: Path, name: str) -> Path | None:
    """The newest `<root>/**/checkpoints/<name>.ckpt`."""
    found = sorted(root.glob(f"**/checkpoints/{name}.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


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


def project_of(argv: list[str]) -> tuple[Path, str] | None:
    """The generated project a command line is about: the folder above its first --config (else the
    working folder) holding a pyproject.toml, and the package its `lightning` script runs."""
    configs = config_files_in(argv)
    start = configs[0].resolve().parent if configs else Path.cwd()
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            script = re.search(r'^lightning = "(\w+)\.cli:lightning_main"', pyproject.read_text(), re.MULTILINE)
            return (folder, script.group(1)) if script else None
    return None


def check_same_project(argv: list[str]) -> None:
    """Every generated project installs a `lightning` script, and the last one installed wins: in
    another project's folder (or with its --config) it would run this project's code on that
    project's config. Stop instead, naming both and the command that runs the other one."""
    ours = __name__.split(".")[0]
    found = project_of(argv)
    if found is not None and found[1] != ours:
        folder, theirs = found
        raise SystemExit(
            f"error: `lightning` in this environment runs the project of package {ours!r}, but {folder} is the project "
            f"of package {theirs!r}. Run it with `python -m {theirs} {' '.join(argv[:1])} ...` (or its own "
            f"`{folder.name}` command), or make `lightning` its command again with `pip install -e {folder}`."
        )


def lightning_main() -> None:
    """Entry point of `lightning`: fit/validate/test/predict are ours, anything else is handed on."""
    argv = sys.argv[1:]
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        other = _other_lightning_command()
        if other is not None:
            sys.exit(other())
    check_same_project(argv)
    main()
