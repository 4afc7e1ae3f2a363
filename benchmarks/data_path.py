"""Images/s of the three training data paths (the "Speed" tricks), measured side by side in one run.

    python benchmarks/data_path.py            # digits at 32x32, 2 threads, table + build/bench/data_path.json
    python benchmarks/data_path.py --quick    # a few batches: checks the script, not the machine (the tests run it)

Paths, all with the same augmentation (pad-and-crop 4, random affine, colour jitter, random
erasing) and the same pre-processing (the dataset's mean/std):
    batched:    `data.device_augment: true`, the split as one tensor on the device, augmented per batch.
    dataloader: `data.device_augment: false`, per-sample transforms in the DataLoader (the default path).
    torchvision: the same ops as plain torchvision v2 transforms, one image at a time, stacked per batch.
Method: one epoch of each path in turn (A, B, C, A, B, C, ...), the first round is a warm-up and is
dropped, the figure is the median over >= 5 rounds; ratios are of those medians. No model runs:
this is the cost of producing the training batches.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench import generated_package  # same folder: run as a script, benchmarks/ is on sys.path
from torchvision.transforms import v2

REPO = Path(__file__).resolve().parents[1]


def augmentation(pkg, size: int) -> tuple[list, list]:
    """(ours for data.augment, the same ops in plain torchvision v2)."""
    transforms = importlib.import_module(f"{pkg.__name__}.transforms")
    affine = {"degrees": (-10.0, 10.0), "translate": (0.1, 0.1), "scale": (0.9, 1.1), "shear": (-10.0, 10.0)}
    common = [v2.RandomAffine(**affine), v2.ColorJitter(brightness=0.4, contrast=0.4), v2.RandomErasing(p=0.25)]
    ours = [transforms.PadAndCrop(4), *common]
    plain = [v2.RandomCrop(size, padding=4), v2.RandomAffine(**affine), v2.ColorJitter(brightness=0.4, contrast=0.4),
             v2.RandomErasing(p=0.25)]
    return ours, plain


def epoch(batches, limit: int | None, device: torch.device) -> tuple[float, int]:
    start, count = time.perf_counter(), 0
    for index, (images, _labels) in enumerate(batches):
        count += len(images)
        if limit is not None and index + 1 >= limit:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, count


def plain_torchvision_batches(dataset, pipeline, batch_size: int):
    """One image at a time through plain torchvision v2 (shuffled), stacked per batch."""
    order = torch.randperm(len(dataset)).tolist()
    for start in range(0, len(order), batch_size):
        samples = [dataset[i] for i in order[start : start + batch_size]]
        yield torch.stack([pipeline(image) for image, _ in samples]), torch.tensor([label for _, label in samples])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few batches, 2 rounds: checks the script, not the machine")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the acceptance figure is for 2 CPU cores)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the per-sample path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device of the batched path")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after the warm-up (>= 5 for figures)")
    parser.add_argument("--out", default=str(REPO / "build" / "bench" / "data_path.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds, limit = (1, 3) if args.quick else (max(args.rounds, 1), None)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as workdir:
        _, pkg = generated_package(Path(workdir), "Bench Data Path")
        ours, plain = augmentation(pkg, args.image_size)
        options = {"image_size": args.image_size, "batch_size": args.batch_size, "augment": ours,
                   "allow_identity_changing": True, "num_workers": args.workers}
        batched = pkg.ImageDataModule(args.dataset, device_augment=True, **options)
        per_sample = pkg.ImageDataModule(args.dataset, **options)
        for dm in (batched, per_sample):
            dm.setup("fit")
        stats = per_sample.fit_preprocessing()
        pipeline = v2.Compose([*per_sample._base_transform(), *plain, v2.Normalize(stats["shift"].tolist(), stats["scale"].tolist())])
        tensors = batched._device_tensors(device)  # built once, as in training (not timed)
        print(f"stored on {tensors[0].device}: {tuple(tensors[0].shape)} {tensors[0].dtype}")
        # Each loader is made once and iterated once per epoch, as Lightning does (persistent workers live on).
        device_batches, dataloader = batched._device_batches(device), per_sample.train_dataloader()
        loaders = {
            "batched (device_augment)": lambda: device_batches,
            f"per-sample DataLoader ({args.workers} workers)": lambda: dataloader,
            "plain torchvision v2 per sample": lambda: plain_torchvision_batches(per_sample.splits.train, pipeline, args.batch_size),
        }
        times: dict[str, list[float]] = {name: [] for name in loaders}
        images = 0
        for round_index in range(rounds + 1):  # round 0: warm-up, dropped
            for name, make in loaders.items():
                seconds, images = epoch(make(), limit, device if name.startswith("batched") else torch.device("cpu"))
                if round_index > 0:
                    times[name].append(seconds)
    rates = {name: images / statistics.median(values) for name, values in times.items()}
    names = list(rates)
    ratios = {
        "batched / per-sample DataLoader": rates[names[0]] / rates[names[1]],
        "batched / plain torchvision v2": rates[names[0]] / rates[names[2]],
        "per-sample DataLoader / plain torchvision v2": rates[names[1]] / rates[names[2]],
    }
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
               f"batched path on {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"\n{args.dataset} {args.image_size}x{args.image_size}, batch {args.batch_size}, {images} images per epoch"
          f"{' (quick: first batches only)' if args.quick else ''}; median of {rounds} rounds after a warm-up; {machine}")
    print(f"{'path':<40} {'images/s':>12} {'epoch s (median)':>18}")
    for name in names:
        print(f"{name:<40} {rates[name]:>12,.0f} {statistics.median(times[name]):>18.4f}")
    for name, value in ratios.items():
        print(f"ratio {name:<46} {value:>6.1f}x")
    result = {"machine": machine, "quick": args.quick, "dataset": args.dataset, "image_size": args.image_size,
              "batch_size": args.batch_size, "images_per_epoch": images, "rounds": rounds,
              "seconds": times, "images_per_second": rates, "ratios": ratios}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
