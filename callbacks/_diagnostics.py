"""Shared plumbing of the diagnostic callbacks (D1–D4, F8) and the training report.

A diagnostic callback keeps its own history and exposes `report_section()`, returning a `Section`
(findings with advice, Markdown lines, matplotlib figures rendered as PIL images by `plots`);
`TrainingReport` collects the sections of every diagnostic on the trainer by that method's presence,
so no diagnostic imports the report.

A problem also names the recipes that address it (`TRY`, most relevant first); the report turns the
problems' recipes into one `compare` command (`compare_command`) whose baseline is the run's own saved
`config.yaml`: from diagnosis to a paired experiment over a few seeds.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytorch_lightning import Trainer
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_info

RECIPE_NAME = re.compile(r"[a-z0-9-]+/[a-z0-9-]+")

# What to try for each problem: recipe names (recipes/<group>/<name>.yaml), the most relevant first.
# Overfitting gets augmentations valid on any dataset (no flips: they change a digit's identity) and
# regularizers; `regularize/l2` comes last because the default SGD already has that weight decay.
TRY: dict[str, tuple[str, ...]] = {
    "overfitting": ("augment/pad-crop", "regularize/dropout", "augment/mixup", "regularize/max-norm",
                    "augment/random-erasing", "regularize/l2"),
    "under_capacity": ("model/wider",),
    "lr_very_high": ("train/lr-finder", "train/warmup-cosine"),
    "lr_high": ("train/lr-finder", "train/warmup-cosine", "train/one-cycle"),
    "lr_low": ("train/lr-finder",),
    "noisy_loss": ("train/batch-size-finder",),
    "noisy_filters": ("augment/pad-crop", "regularize/max-norm", "regularize/l2"),
    "dead": ("activation/leaky-relu", "activation/prelu", "init/he"),
    "saturated": ("activation/relu", "activation/leaky-relu", "init/lsuv"),
    "exploding": ("train/gradient-clipping", "train/lr-finder", "train/warmup-cosine"),
    "symmetric": ("init/he", "init/lsuv"),
    "vanishing": ("init/he", "init/lsuv"),
}
# Recipes that set `model.backbone_options` of the default sized convnet: they fail on another backbone, and
# over a run with options of its own they would replace them (a later config replaces a dict, it does not merge).
SIZED_CONVNET_ONLY = ("regularize/dropout", "model/wider")
MAX_ARMS = 4  # arms besides the baseline: each costs a training per seed
COMPARE_SEEDS = (0, 1, 2)


@dataclass
class Finding:
    """One diagnosis: which trick saw it (`source`, a trick ID of docs/tricks.md), what it saw, what to do,
    and for a problem the recipes to try (`recipes`, names such as "regularize/dropout", most relevant first)."""

    source: str
    verdict: str
    advice: str
    healthy: bool = False
    recipes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.recipes = tuple(self.recipes)
        bad = next((r for r in self.recipes if not RECIPE_NAME.fullmatch(r)), None)
        if bad is not None:
            raise ValueError(f"Finding(recipes=...): {bad!r} is not a recipe name; write <group>/<name>, e.g. 'regularize/dropout'.")

    def line(self, recipes: bool = False) -> str:
        """`[source] verdict -> advice`; with `recipes`, the problem's recipes to try appended."""
        tail = f" (try {', '.join(self.recipes)})" if recipes and self.recipes and not self.healthy else ""
        return f"[{self.source}] {self.verdict} -> {self.advice}{tail}"


def fitting_recipes(recipes: Sequence[str], backbone: str | None, backbone_options: Mapping | None = None) -> tuple[str, ...]:
    """`recipes` without those that need the default sized convnet, when the run's `backbone` is another
    (None: unknown, keep them) or it set `backbone_options` (the recipe would replace them)."""
    if backbone in (None, "sized_convnet") and not backbone_options:
        return tuple(recipes)
    return tuple(r for r in recipes if r not in SIZED_CONVNET_ONLY)


def recipes_to_try(findings: Sequence[Finding], limit: int = MAX_ARMS) -> list[str]:
    """The problems' recipes, taken one per problem in turn (so each problem gets an arm before any gets
    a second), each once, at most `limit`.

    Example:
        >>> gap = Finding("D3", "overfitting", "regularize", recipes=("augment/pad-crop", "regularize/dropout"))
        >>> lr = Finding("D1", "LR too low", "raise it", recipes=("train/lr-finder",))
        >>> recipes_to_try([gap, lr, Finding("D4", "smooth", "none", healthy=True)])
        ['augment/pad-crop', 'train/lr-finder', 'regularize/dropout']
    """
    queues = [list(f.recipes) for f in findings if not f.healthy]
    chosen: list[str] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            while queue and queue[0] in chosen:
                queue.pop(0)
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return chosen


def compare_command(findings: Sequence[Finding], config: str | Path | None, limit: int = MAX_ARMS) -> str | None:
    """The `compare` command that tries the problems' recipes against the run's own saved config
    (`config`; None gives a `<run folder>/config.yaml` placeholder); None when no problem names a recipe.
    An arm is named after its recipe (`dropout`), or group-name where two recipes share a name.

    Example:
        >>> compare_command([Finding("I1", "symmetric units", "random init", recipes=("init/he",))], "runs/a/version_0/config.yaml")
        'lightning compare --arm he=recipes/init/he.yaml --seeds 0 1 2 -- --config runs/a/version_0/config.yaml'
    """
    recipes = recipes_to_try(findings, limit)
    if not recipes:
        return None
    arms: list[str] = []
    for recipe in recipes:
        group, _, name = recipe.partition("/")
        arm = name if not any(a.startswith(f"{name}=") for a in arms) else f"{group}-{name}"
        arms.append(f"{arm}=recipes/{recipe}.yaml")
    baseline = shlex.quote(str(config)) if config is not None else "<run folder>/config.yaml"
    return (f"lightning compare {' '.join(f'--arm {a}' for a in arms)} --seeds {' '.join(map(str, COMPARE_SEEDS))} "
            f"-- --config {baseline}")


@dataclass
class Section:
    """A diagnostic's part of the report: findings, Markdown lines and images (name -> PIL image, from `plots`)."""

    title: str
    findings: list[Finding] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    images: dict = field(default_factory=dict)


def run_folder(trainer: Trainer) -> Path | None:
    """The run's folder: logger save_dir/name/version, the rule ModelCheckpoint uses for `checkpoints/`.
    The project's CLI saves each run's `config.yaml` there too. None under fast_dev_run (Lightning's
    DummyLogger: nothing is written to disk)."""
    if trainer.fast_dev_run:
        return None
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir, str(logger.name), version)


def wandb_logger(trainer: Trainer) -> WandbLogger | None:
    """The trainer's W&B logger, if it has one (images and the run summary go there)."""
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def announce(trainer: Trainer, key: str, finding: Finding, when: str | None = None) -> None:
    """Say a finding on the console (rank zero) and put it in the W&B run summary, live."""
    if not trainer.is_global_zero:
        return
    rank_zero_info(f"{when or f'epoch {trainer.current_epoch}'}: {finding.line()}")
    logger = wandb_logger(trainer)
    if logger is not None:
        logger.experiment.summary[f"diagnose/{key}"] = finding.line()
