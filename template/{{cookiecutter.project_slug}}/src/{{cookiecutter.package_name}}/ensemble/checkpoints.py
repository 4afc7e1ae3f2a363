"""Ensemble members from checkpoints: which files a source names, loading them safely, ranking runs.

Checkpoints are read with `torch.load(weights_only=True)`: tensors and plain data only, so a file
someone sent you cannot run code. Each member is rebuilt as `ImageClassifier(**hyper_parameters)`
(keys starting with `_` are LightningCLI's bookkeeping and ignored).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..module import ImageClassifier

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


def run_config(checkpoint: Path) -> Path | None:
    """The `config.yaml` of the run a checkpoint belongs to (it sits above checkpoints/)."""
    for folder in list(checkpoint.parents)[:4]:
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


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
