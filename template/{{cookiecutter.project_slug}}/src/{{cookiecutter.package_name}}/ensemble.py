"""E5 — EnsembleModule: test and predict with several checkpoints as one model; E1/E2/E3 commands.

Lecture: "Ensembles" (same model with different initializations; top models of a search; different
checkpoints of one model). The members are checkpoints of this project's ImageClassifier; their
class probabilities are averaged (default), or their logits averaged, or they vote; optionally
weighted by each member's validation accuracy. On GPUs, members that share one architecture run as
a single vmapped call over their stacked parameters (`torch.func`); on CPU one whole-batch call per
member is faster (measured: vmap makes one grouped convolution of the members' convolutions).

Checkpoints are read with `torch.load(weights_only=True)`: tensors and plain data only, so a file
someone sent you cannot run code. Each member is rebuilt as `ImageClassifier(**hyper_parameters)`
(keys starting with `_` are LightningCLI's bookkeeping and ignored).

The command (the project's `lightning` CLI is built for one ImageClassifier, so the ensemble has
its own small command with the same data options):

    python -m <package>.ensemble test    SOURCE... [--combine probs|logits|vote] [--weights val|0.5,0.3,0.2]
    python -m <package>.ensemble predict SOURCE... [--output predictions.pt]
    python -m <package>.ensemble seeds   --seeds 0 1 2 [--jobs 3] -- --config configs/default.yaml   (E1)
    python -m <package>.ensemble topk    [--root runs] --k 5 [--metric val/acc] [--wandb ENTITY/PROJECT]  (E2)

A SOURCE is a checkpoint file or a folder: a folder's `*.ckpt` files (without `last.ckpt`), or else
its `checkpoints/snapshots/*.ckpt` (E3 snapshot ensemble), or else its `checkpoints/best.ckpt`
(a run folder). The data come from `--config` (default: the first member's run `config.yaml`,
else `configs/default.yaml`), with `--data key=value` overrides; `test` uses the test split,
`predict` too, and `--weights val` scores members on the validation split.

Parallel seeds (E1): `--jobs N` runs N fits at once (one GPU each, round-robin, when there are GPUs).
On a cluster, run `python -m <package> fit ... --seed_everything S` as an array job (one seed per
task), then `python -m <package>.ensemble test runs/<project>/<id1> runs/<project>/<id2> ...`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from pytorch_lightning import LightningModule, Trainer
from torch import nn

from .callbacks import (
    METHODS,
    combine,
    member_logits,
    nll,
    normalized_weights,
    stack_states,
    vmap_pays_off,
)
from .module import ImageClassifier

__all__ = ["EnsembleModule", "expand_checkpoints", "load_checkpoint", "checkpoint_score", "top_k_checkpoints", "main"]

PACKAGE = __package__ or __name__.rpartition(".")[0]  # also right under `python -m`
AGREE = ("num_classes", "in_channels", "image_size")  # what every member must share


def expand_checkpoints(sources: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Checkpoint files from files and folders (rules in the module docstring), in order, no duplicates."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_file():
            found.append(source)
        elif source.is_dir():
            files = sorted(p for p in source.glob("*.ckpt") if p.name != "last.ckpt")
            files = files or sorted((source / "checkpoints" / "snapshots").glob("*.ckpt"))
            files = files or [p for p in [source / "checkpoints" / "best.ckpt"] if p.is_file()]
            if not files:
                raise FileNotFoundError(
                    f"{source}: no checkpoints in it (looked for *.ckpt, checkpoints/snapshots/*.ckpt, checkpoints/best.ckpt)."
                )
            found.extend(files)
        else:
            raise FileNotFoundError(f"{source}: no such checkpoint file or folder.")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ValueError("EnsembleModule: give at least one checkpoint (a .ckpt file or a run/snapshot folder).")
    return unique


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning checkpoint loaded weights-only (no code from the file runs), with a clear error otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint file.") from None
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: refused by weights-only loading (it holds Python objects, not only tensors and plain data: "
            f"{str(error).splitlines()[0][:200]}). Load it yourself only if you trust its source, and re-save its "
            "`state_dict` and `hyper_parameters`."
        ) from None
    except Exception as error:  # a truncated or foreign file
        raise ValueError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path}: not a checkpoint of this project's ImageClassifier (no state_dict/hyper_parameters).")
    return checkpoint


def build_member(path: Path, checkpoint: dict[str, Any]) -> ImageClassifier:
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    # The state dict below holds every weight: fetching pretrained weights again would be wasted (or need the network).
    if hparams.get("pretrained_checkpoint"):
        hparams["pretrained_checkpoint"] = None
    if isinstance(hparams.get("backbone_options"), dict) and hparams["backbone_options"].get("weights"):
        hparams["backbone_options"] = {**hparams["backbone_options"], "weights": None}
    try:
        model = ImageClassifier(**hparams)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError, ValueError) as error:
        raise ValueError(f"{path}: cannot rebuild an ImageClassifier from it ({error}).") from None
    return model.eval()


def checkpoint_score(checkpoint: dict[str, Any], metric: str = "val/acc") -> tuple[float, str] | None:
    """(best score, mode) of the run's ModelCheckpoint that monitored `metric`, from the checkpoint's callback state."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not isinstance(state, dict) or state.get("monitor") != metric or state.get("best_model_score") is None:
            continue
        mode = re.search(r"'mode': '(\w+)'", key)
        return float(state["best_model_score"]), mode.group(1) if mode else "max"
    return None


class EnsembleModule(LightningModule):
    """Several ImageClassifier checkpoints evaluated as one model (E5).

    Args:
        checkpoints: checkpoint files and/or folders (a run folder, a snapshot folder, a top-k folder).
        combine: `probs` (average the probabilities; default), `logits` (average the logits), `vote`.
        weights: None (equal), `val` (each member's accuracy on the validation split, measured when
            test/predict starts), or one number per member.

    Example:
        >>> ensemble = EnsembleModule(["runs/my-cnn/a1/checkpoints/best.ckpt", "runs/my-cnn/b2"])  # doctest: +SKIP
        >>> Trainer().test(ensemble, datamodule=ImageDataModule("digits"))                         # doctest: +SKIP
    """

    def __init__(
        self,
        checkpoints: str | Sequence[str],
        combine: str = "probs",
        weights: str | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if combine not in METHODS:
            raise ValueError(f"EnsembleModule(combine={combine!r}): choose one of {', '.join(METHODS)}.")
        if isinstance(weights, str) and weights != "val":
            raise ValueError(f"EnsembleModule(weights={weights!r}): use null, 'val' or one number per member.")
        self.paths = expand_checkpoints(checkpoints)
        loaded = [load_checkpoint(p) for p in self.paths]
        self.members = nn.ModuleList(build_member(p, c) for p, c in zip(self.paths, loaded, strict=True))
        for key in AGREE:
            values = [m.hparams[key] for m in self.members]
            if len(set(values)) > 1:
                listing = ", ".join(f"{p.name} ({p.parent.name}): {v}" for p, v in zip(self.paths, values, strict=True))
                raise ValueError(
                    f"EnsembleModule: members disagree on {key} ({listing}); ensemble checkpoints trained for the same "
                    "classes and input size."
                )
        self.num_classes, self.in_channels, self.image_size = (self.members[0].hparams[k] for k in AGREE)
        self.scores = [checkpoint_score(c) for c in loaded]
        self.combine_method = combine
        self.weights_option = weights
        self.weights = None if weights is None or weights == "val" else normalized_weights(weights, len(self.members))
        # One vmapped call when all members share an architecture (same hyperparameters and tensor shapes).
        same = all(dict(m.hparams) == dict(self.members[0].hparams) for m in self.members)
        self._homogeneous = same and stack_states([m.state_dict() for m in self.members]) is not None
        self._stacked: tuple[torch.device, dict[str, torch.Tensor]] | None = None

    def train(self, mode: bool = True):
        return super().train(False)  # members are always evaluated (BatchNorm running statistics, no dropout)

    def member_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of every member, (M, B, C): one vmapped call on GPUs, one call per member elsewhere."""
        if not (self._homogeneous and vmap_pays_off(images.device)):
            return torch.stack([member(images) for member in self.members])
        if self._stacked is None or self._stacked[0] != images.device:
            self._stacked = (images.device, stack_states([m.state_dict() for m in self.members]))
        return member_logits(self.members[0], [], images, self._stacked[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The ensemble's class probabilities, (B, C)."""
        return combine(self.member_logits(images).float(), self.combine_method, self._weights(images.device))

    def _weights(self, device) -> torch.Tensor | None:
        return None if self.weights is None else self.weights.to(device)

    def _evaluate(self, batch, stage: str) -> None:
        images, targets = batch[0], batch[1]
        logits = self.member_logits(images).float()
        probs = combine(logits, self.combine_method, self._weights(images.device))
        size = targets.numel()
        self.log(f"{stage}/acc", (probs.argmax(-1) == targets).float().mean(), batch_size=size, sync_dist=True)
        self.log(f"{stage}/nll", nll(probs, targets).mean(), batch_size=size, sync_dist=True)
        for index, member in enumerate(logits):
            self.log(f"{stage}/member{index}_acc", (member.argmax(-1) == targets).float().mean(), batch_size=size, sync_dist=True)
            self.log(f"{stage}/member{index}_nll", nll(member.softmax(-1), targets).mean(), batch_size=size, sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images)

    def on_test_start(self) -> None:
        self._weigh_by_validation()

    def on_predict_start(self) -> None:
        self._weigh_by_validation()

    @torch.no_grad()
    def _weigh_by_validation(self) -> None:
        if self.weights_option != "val":
            return
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            raise ValueError("EnsembleModule(weights='val') needs a datamodule with a validation split.")
        correct = torch.zeros(len(self.members), device=self.device)
        count = torch.zeros((), device=self.device)
        for batch in datamodule.val_dataloader():
            images, targets = self.trainer.strategy.batch_to_device(batch, self.device)[:2]
            correct += (self.member_logits(images).argmax(-1) == targets).sum(dim=1)
            count += targets.numel()
        accuracy = correct / count.clamp_min(1)  # every rank sees the whole split here: no reduction needed
        self.weights = normalized_weights(accuracy.cpu(), len(self.members))
        print(f"EnsembleModule: weights from validation accuracy {[round(a, 4) for a in accuracy.tolist()]}", flush=True)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def _run_config(checkpoint: Path) -> Path | None:
    """The `config.yaml` of the run a checkpoint belongs to (it sits above checkpoints/)."""
    for folder in list(checkpoint.parents)[:4]:
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def build_datamodule(config: Path | None, overrides: Sequence[str], image_size: int):
    """The ImageDataModule of a training config's `data:` section, with `key=value` overrides."""
    from jsonargparse import ArgumentParser

    from . import registry  # noqa: F401  (configs name classes by short name)
    from .datamodule import ImageDataModule

    data: dict[str, Any] = {}
    if config is not None:
        data = dict((yaml.safe_load(config.read_text()) or {}).get("data") or {})
    data.pop("augment", None)  # test and predict never augment
    data["image_size"] = image_size  # what the members were trained at
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--data {item!r}: write key=value, e.g. --data dataset=digits.")
        data[key] = yaml.safe_load(value)
    if data["image_size"] != image_size:
        raise SystemExit(f"--data image_size={data['image_size']}, but the members were trained at {image_size}: drop it.")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageDataModule, "data", fail_untyped=False)
    try:
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
        return instantiate(parser.parse_object({"data": data})).data
    except Exception as error:
        raise SystemExit(f"Cannot build the data from {config or 'the defaults'}: {error}") from None


def _trainer(args) -> Trainer:
    return Trainer(accelerator=args.accelerator, devices=args.devices, logger=False, enable_checkpointing=False,
                   enable_model_summary=False, enable_progress_bar=False)


def run_ensemble(args, sources: Sequence[str | Path]) -> dict[str, float] | torch.Tensor:
    weights = args.weights
    if weights not in (None, "val"):
        weights = [float(w) for w in weights.split(",")]
    try:
        module = EnsembleModule([str(s) for s in sources], combine=args.combine, weights=weights)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(str(error)) from None
    print(f"Ensemble of {len(module.members)} ({args.combine}):", *(f"  {p}" for p in module.paths), sep="\n", flush=True)
    config = Path(args.config) if args.config else _run_config(module.paths[0])
    if config is None and Path("configs/default.yaml").is_file():
        config = Path("configs/default.yaml")
    datamodule = build_datamodule(config, args.data, module.image_size)
    if datamodule.num_classes != module.num_classes:
        raise SystemExit(f"The data have {datamodule.num_classes} classes but the members predict {module.num_classes}.")
    trainer = _trainer(args)
    if args.command == "predict":
        probs = torch.cat(trainer.predict(module, datamodule=datamodule))
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"probs": probs, "predictions": probs.argmax(-1), "members": [str(p) for p in module.paths]}, output)
        print(f"Predictions of {len(probs)} images -> {output}", flush=True)
        return probs
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    members = [metrics[f"test/member{i}_acc"] for i in range(len(module.members))]
    print(f"test/acc of the members: {', '.join(f'{a:.4f}' for a in members)}", flush=True)
    print(f"test/acc of the ensemble: {metrics['test/acc']:.4f}  (test/nll {metrics['test/nll']:.4f})", flush=True)
    return metrics


def train_seeds(seeds: Sequence[int], fit_args: Sequence[str], jobs: int = 1, root: Path = Path("runs")) -> list[Path]:
    """E1: run `python -m <package> fit <fit_args> --seed_everything S` for every seed; return their best checkpoints."""
    before = set(root.glob("**/checkpoints/best.ckpt"))
    gpus = torch.cuda.device_count()
    running: list[tuple[int, subprocess.Popen, Path | None]] = []
    failed: list[str] = []

    def finish(seed: int, process: subprocess.Popen, log: Path | None) -> None:
        if process.wait() != 0:
            failed.append(f"seed {seed} (exit {process.returncode}{f', log {log}' if log else ''})")

    for index, seed in enumerate(seeds):
        command = [sys.executable, "-m", PACKAGE, "fit", *fit_args, f"--seed_everything={seed}"]
        if not any(a.startswith("--trainer.logger.init_args.name") for a in fit_args):
            # A run name per seed: its own folder for CSV/TensorBoard (parallel jobs would race for version_0), a label on W&B.
            command.append(f"--trainer.logger.init_args.name=seed-{seed}")
        env = dict(os.environ)
        if jobs > 1 and gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # one GPU per job
        print(f"[seed {seed}] {' '.join(command)}", flush=True)
        if jobs == 1:
            finish(seed, subprocess.Popen(command, env=env), None)
            continue
        log = root / "seeds" / f"seed-{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as stream:
            running.append((seed, subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT), log))
        while len(running) >= jobs:
            finish(*running.pop(0))
    for job in running:
        finish(*job)
    if failed:
        raise SystemExit(f"Training failed for {', '.join(failed)}.")
    members = sorted(set(root.glob("**/checkpoints/best.ckpt")) - before, key=lambda p: p.stat().st_mtime)
    if len(members) < len(seeds):
        raise SystemExit(
            f"{len(seeds)} fits wrote {len(members)} new checkpoints/best.ckpt under {root.resolve()}: keep a ModelCheckpoint "
            "(filename: best) in the config, no fast_dev_run, and point --root at the loggers' save_dir."
        )
    return members


def top_k_checkpoints(root: Path, k: int, metric: str = "val/acc", mode: str | None = None) -> list[tuple[Path, float]]:
    """E2: the k local runs (`<root>/**/checkpoints/best.ckpt`) with the best `metric` in their checkpoint state."""
    scored = []
    for path in sorted(root.glob("**/checkpoints/best.ckpt")):
        found = checkpoint_score(load_checkpoint(path), metric)
        if found is not None:
            scored.append((path, found[0], found[1]))
    if not scored:
        raise SystemExit(f"No run under {root.resolve()} has a checkpoints/best.ckpt that monitored {metric}.")
    mode = mode or scored[0][2]
    ranked = sorted(scored, key=lambda item: item[1], reverse=mode == "max")
    return [(path, score) for path, score, _ in ranked[:k]]


def top_k_wandb(path: str, root: Path, k: int, metric: str, mode: str) -> list[tuple[Path, float]]:
    """E2 online: the k best runs of a W&B project or sweep by their summary `metric`, matched to local run folders."""
    import wandb

    api = wandb.Api()
    order = f"{'-' if mode == 'max' else '+'}summary_metrics.{metric}"
    runs = api.sweep(path).runs if "/sweeps/" in path else api.runs(path, order=order)
    runs = sorted((r for r in runs if metric in r.summary), key=lambda r: r.summary[metric], reverse=mode == "max")[:k]
    chosen, missing = [], []
    for run in runs:
        local = sorted(root.glob(f"**/{run.id}/checkpoints/best.ckpt"))
        (chosen.append((local[0], float(run.summary[metric]))) if local else missing.append(run.id))
    if missing:
        raise SystemExit(f"W&B runs {', '.join(missing)} have no checkpoints/best.ckpt under {root.resolve()}; run there or copy them.")
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.ensemble", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--combine", choices=METHODS, default="probs", help="how members combine (default: probs)")
    shared.add_argument("--weights", default=None, help="'val' (validation accuracy) or one number per member, comma-separated")
    shared.add_argument("--config", default=None, help="training config whose data: section to use")
    shared.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help="data option override")
    shared.add_argument("--accelerator", default="auto")
    shared.add_argument("--devices", default="auto")
    shared.add_argument("--output", default="predictions.pt", help="predict: where the probabilities go")
    for name, help_text in (("test", "test the ensemble"), ("predict", "write the ensemble's probabilities")):
        sub = commands.add_parser(name, parents=[shared], help=help_text)
        sub.add_argument("sources", nargs="+", help="checkpoint files or folders")
    seeds = commands.add_parser("seeds", parents=[shared], help="E1: train one config with several seeds, then test them")
    seeds.add_argument("--seeds", type=int, nargs="+", required=True)
    seeds.add_argument("--jobs", type=int, default=1, help="fits at once (one GPU each when there are several)")
    seeds.add_argument("--root", type=Path, default=Path("runs"), help="the loggers' save_dir")
    seeds.add_argument("fit_args", nargs=argparse.REMAINDER, help="after --: the arguments of `fit`")
    topk = commands.add_parser("topk", parents=[shared], help="E2: ensemble the best k runs of a search")
    topk.add_argument("--k", type=int, default=5)
    topk.add_argument("--root", type=Path, default=Path("runs"))
    topk.add_argument("--metric", default="val/acc")
    topk.add_argument("--mode", choices=("max", "min"), default=None, help="default: the ModelCheckpoint's mode")
    topk.add_argument("--wandb", default=None, metavar="ENTITY/PROJECT[/sweeps/ID]", help="rank runs on W&B instead")
    for sub in (seeds, topk):
        sub.add_argument("--no-test", action="store_true", help="only list the members")
    return parser


def main(argv: Sequence[str] | None = None):
    args = _parser().parse_args(argv)
    if args.command in ("test", "predict"):
        return run_ensemble(args, args.sources)
    if args.command == "seeds":
        if args.jobs < 1:
            raise SystemExit(f"--jobs {args.jobs}: use 1 or more.")
        fit_args = args.fit_args[1:] if args.fit_args[:1] == ["--"] else args.fit_args
        members = train_seeds(args.seeds, fit_args, args.jobs, args.root)
    else:
        if args.k < 1:
            raise SystemExit(f"--k {args.k}: use 1 or more.")
        if args.wandb:
            ranked = top_k_wandb(args.wandb, args.root, args.k, args.metric, args.mode or "max")
        else:
            ranked = top_k_checkpoints(args.root, args.k, args.metric, args.mode)
        for path, score in ranked:
            print(f"{args.metric}={score:.4f}  {path}", flush=True)
        members = [path for path, _ in ranked]
    print(f"Members: {' '.join(str(p) for p in members)}", flush=True)
    if args.no_test:
        return members
    args.command = "test"
    return run_ensemble(args, members)


if __name__ == "__main__":
    main()
