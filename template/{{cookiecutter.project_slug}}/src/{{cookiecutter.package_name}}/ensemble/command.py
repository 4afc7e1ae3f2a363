"""The `ensemble` command (E1, E2, E3, E5): `<slug> ensemble ...` or `python -m <package>.ensemble ...`.

The `lightning` CLI is built for one ImageClassifier, so the ensemble has a command of its own, with
the same data options (read through the DataModule's own signature):

    <slug> ensemble test    SOURCE... [--combine probs|logits|vote] [--weights val|0.5,0.3,0.2]
    <slug> ensemble predict SOURCE... [--output predictions.pt]
    <slug> ensemble seeds   --seeds 0 1 2 [--jobs 3] -- --config configs/default.yaml   (E1)
    <slug> ensemble topk    [--root runs] --k 5 [--metric val/acc] [--wandb ENTITY/PROJECT]  (E2)

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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Trainer

from ..compare.launch import Job, run_jobs
from ..data_config import data_section, datamodule_from_section
from ..utils.ensembling import METHODS
from .checkpoints import run_config, top_k_checkpoints, top_k_wandb
from .module import EnsembleModule

PACKAGE = (__package__ or __name__.rpartition(".")[0]).rpartition(".")[0]  # the project package, also under `python -m`


def build_datamodule(config: Path | None, overrides: Sequence[str], image_size: int):
    """The ImageDataModule of a training config's `data:` section, with `key=value` overrides."""
    data = data_section(config)
    data.pop("augment", None)  # test and predict never augment
    data["image_size"] = image_size  # what the members were trained at
    data.update(data_section(None, overrides))
    if data["image_size"] != image_size:
        raise SystemExit(f"--data image_size={data['image_size']}, but the members were trained at {image_size}: drop it.")
    try:
        return datamodule_from_section(data)
    except Exception as error:
        raise SystemExit(f"Cannot build the data from {config or 'the defaults'}: {error}") from None


def _trainer(args) -> Trainer:
    return Trainer(accelerator=args.accelerator, devices=args.devices, logger=False, enable_checkpointing=False,
                   enable_model_summary=False, enable_progress_bar=False)


def parse_weights(text: str | None) -> str | list[float] | None:
    """`--weights`: None, 'val', or one number per member, comma-separated."""
    if text in (None, "val"):
        return text
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise SystemExit(f"--weights {text!r}: use 'val' or one number per member, e.g. 0.5,0.3,0.2.") from None


def announce(module: EnsembleModule) -> None:
    print(f"Ensemble of {len(module.members)} ({module.combine_method}):", *(f"  {p}" for p in module.paths), sep="\n",
          flush=True)


def report_test(metrics: dict[str, Any], members: int) -> None:
    accs = [float(metrics[f"test/member{i}_acc"]) for i in range(members)]
    print(f"test/acc of the members: {', '.join(f'{a:.4f}' for a in accs)}", flush=True)
    print(f"test/acc of the ensemble: {float(metrics['test/acc']):.4f}  (test/nll {float(metrics['test/nll']):.4f}, "
          f"test/ece {float(metrics['test/ece']):.4f})", flush=True)


def save_predictions(probs: torch.Tensor, module: EnsembleModule, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"probs": probs, "predictions": probs.argmax(-1), "members": [str(p) for p in module.paths]}, output)
    print(f"Predictions of {len(probs)} images -> {output}", flush=True)


def run_ensemble(args, sources: Sequence[str | Path]) -> dict[str, float] | torch.Tensor:
    try:
        module = EnsembleModule([str(s) for s in sources], combine=args.combine, weights=parse_weights(args.weights))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(str(error)) from None
    announce(module)
    config = Path(args.config) if args.config else run_config(module.paths[0])
    if config is None and Path("configs/default.yaml").is_file():
        config = Path("configs/default.yaml")
    datamodule = build_datamodule(config, args.data, module.image_size)
    if datamodule.num_classes != module.num_classes:
        raise SystemExit(f"The data have {datamodule.num_classes} classes but the members predict {module.num_classes}.")
    trainer = _trainer(args)
    if args.command == "predict":
        probs = torch.cat(trainer.predict(module, datamodule=datamodule))
        save_predictions(probs, module, Path(args.output))
        return probs
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    report_test(metrics, len(module.members))
    return metrics


def train_seeds(seeds: Sequence[int], fit_args: Sequence[str], jobs: int = 1, root: Path = Path("runs")) -> list[Path]:
    """E1: run `python -m <package> fit <fit_args> --seed_everything S` for every seed; return their best checkpoints."""
    before = set(root.glob("**/checkpoints/best.ckpt"))
    queue: list[Job] = []
    for seed in seeds:
        command = [sys.executable, "-m", PACKAGE, "fit", *fit_args, f"--seed_everything={seed}"]
        if not any(a.startswith("--trainer.logger.init_args.name") for a in fit_args):
            # A run name per seed: its own folder for CSV/TensorBoard (parallel jobs would race for version_0), a label on W&B.
            command.append(f"--trainer.logger.init_args.name=seed-{seed}")
        print(f"[seed {seed}] {' '.join(command)}", flush=True)
        queue.append(Job(f"seed {seed}", command, None if jobs == 1 else root / "seeds" / f"seed-{seed}.log"))
    failed: list[str] = []

    def note_failure(job: Job, code: int) -> None:  # the other seeds still run
        if code != 0:
            failed.append(f"{job.label} (exit {code}{f', log {job.log}' if job.log else ''})")

    run_jobs(queue, jobs, note_failure)
    if failed:
        raise SystemExit(f"Training failed for {', '.join(failed)}.")
    members = sorted(set(root.glob("**/checkpoints/best.ckpt")) - before, key=lambda p: p.stat().st_mtime)
    if len(members) < len(seeds):
        raise SystemExit(
            f"{len(seeds)} fits wrote {len(members)} new checkpoints/best.ckpt under {root.resolve()}: keep a ModelCheckpoint "
            "(filename: best) in the config, no fast_dev_run, and point --root at the loggers' save_dir."
        )
    return members


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
