"""Start-up checks of the project's CLI: everything that can be known wrong before a run starts.

Each check names the value and the fix and raises SystemExit before anything is written: conflicting
or uninstallable recipes, a checkpoint that is missing or corrupt, a non-positive learning rate,
another project's `lightning` command. The CLI (`cli.py`) calls them; they never import it.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import re
import zipfile
from collections import defaultdict
from pathlib import Path

import yaml

from .recipe_info import RecipeInfo, merged_recipes, read_recipe


def config_files_in(argv: list[str]) -> list[Path]:
    """The files given with --config / -c on a command line."""
    files = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            files.append(arg.partition("=")[2])
        elif arg in ("--config", "-c") and i + 1 < len(argv):
            files.append(argv[i + 1])
    return [Path(f) for f in files]


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


def _given_options(argv: list[str], key: str) -> list[tuple[str, dict]]:
    """(where, value) for every dict given to `model.<key>`, in command-line order: in a --config file
    (under `model:` or `model.init_args:`) or as `--model.<key>=<yaml>`."""
    given = []
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        path = value if name == "--config" and value else None
        if arg in ("--config", "-c") and i + 1 < len(argv):
            path = argv[i + 1]
        if path is not None:
            try:
                model = (yaml.safe_load(Path(path).read_text()) or {}).get("model")
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            model = (model or {}).get("init_args", model) if isinstance(model, dict) else None
            if isinstance(model, dict) and isinstance(model.get(key), dict):
                given.append((f"in {path}", model[key]))
        elif name == f"--model.{key}":
            text = value if value else (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                options = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if isinstance(options, dict):
                given.append(("on the command line", options))
    return given


def replaced_options(argv: list[str], key: str = "backbone_options") -> list[str]:
    """One note per `model.<key>` dict that replaces an earlier one leaving some of its options out.

    jsonargparse replaces a dict value as a whole rather than merging it, so `regularize/dropout`
    (`backbone_options: {stage_dropout: …, dropout: 0.5}`) after a config that sets `widths` trains the
    backbone's default widths. That is LightningCLI's rule and may be meant; the note says what no
    longer applies, so it is never a surprise.

    Example: `--config small.yaml --config recipes/regularize/dropout.yaml`, small.yaml setting
    `widths: [16, 32]`, prints "note: model.backbone_options in recipes/regularize/dropout.yaml replaces
    the one in small.yaml (a dict is replaced, not merged): widths=[16, 32] no longer applies; repeat it
    there or on the command line to keep it."
    """
    notes, given = [], _given_options(argv, key)
    for (before_at, before), (at, options) in itertools.pairwise(given):
        lost = [f"{k}={v}" for k, v in before.items() if k not in options]
        if lost:
            verb = "applies" if len(lost) == 1 else "apply"
            notes.append(f"note: model.{key} {at} replaces the one {before_at} (a dict is replaced, not "
                         f"merged): {', '.join(lost)} no longer {verb}; repeat {'it' if len(lost) == 1 else 'them'} "
                         f"there or on the command line to keep {'it' if len(lost) == 1 else 'them'}.")
    return notes


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
