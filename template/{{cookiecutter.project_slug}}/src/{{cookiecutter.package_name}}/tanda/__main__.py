"""A5 — TANDA commands: `learn` a TF-sequence policy on the training split, `compare` augmentations.

    <slug> tanda learn [--config configs/default.yaml] [--data image_size=32 ...] --steps 300 --length 3 \\
        --variant mean_field --seed 0 --out policies/tanda.pt
    <slug> tanda compare --train-size 200 --seeds 3 --epochs 30

The data are the config's `data:` section (default: configs/default.yaml when it exists), read with the
DataModule's own signature, plus `--data key=value` overrides; policies are learned on its training split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ..data_config import data_section, datamodule_from_section
from ..datamodule import ImageDataModule
from .augment import TandaAugment
from .learn import learn_policy, probability_table, save_policy
from .policy import VARIANTS
from .tfs import BENIGN, default_tfs

PACKAGE = __package__.rsplit(".", 1)[0]
DEFAULT_CONFIG = Path("configs/default.yaml")


def datamodule(args: argparse.Namespace) -> ImageDataModule:
    config = Path(args.config) if args.config else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    data = data_section(config, args.data)
    data.pop("augment", None)  # the policy is learned on (and compared against) unaugmented images
    data["download"] = False
    return datamodule_from_section(data)


def training_images(dm: ImageDataModule, max_images: int, seed: int) -> torch.Tensor:
    """Up to `max_images` images of the training split, as the model sees them before augmentation
    and pre-processing (never validation or test images)."""
    images = torch.cat([torch.as_tensor(b) for b in dm.unaugmented_train_batches()]).float()
    if len(images) > max_images:
        images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:max_images]]
    return images


def log_to_wandb(result: dict) -> None:
    """Log the TF probabilities to the active W&B run, if there is one."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    table = wandb.Table(
        columns=["tf", "probability"],
        data=[list(r) for r in zip(result["tf_names"], result["probabilities"], strict=True)],
    )
    wandb.log({"tanda/probabilities": wandb.plot.bar(table, "tf", "probability", title="TANDA TF probabilities")})
    wandb.run.summary.update(
        {f"tanda/p_{n}": p for n, p in zip(result["tf_names"], result["probabilities"], strict=True)}
    )


def learn(args: argparse.Namespace) -> dict:
    torch.set_num_threads(max(1, args.threads))
    dm = datamodule(args)
    images = training_images(dm, args.max_images, args.seed)
    # Default: the benign TFs plus colour inversion, a probe the policy should reject. `rotate_180` is
    # opt-in: it changes digit labels (6 <-> 9), which a realism discriminator cannot see (A7 refuses it).
    tfs = default_tfs(args.tfs.split(",") if args.tfs else [*BENIGN, "invert"])
    print(
        f"TANDA ({args.variant}, L={args.length}) on {len(images)} {dm.dataset} training images, TFs: {', '.join(tfs)}"
    )
    start = time.perf_counter()
    result = learn_policy(
        images,
        tfs,
        variant=args.variant,
        length=args.length,
        steps=args.steps,
        batch_size=args.batch_size,
        alpha=args.alpha,
        margin=args.margin,
        entropy=args.entropy,
        seed=args.seed,
        log_every=max(1, args.steps // 5),
    )
    result["config"].update(dataset=dm.dataset, image_size=dm.image_size)
    print(
        f"learned in {time.perf_counter() - start:.1f} s\n{probability_table(result['tf_names'], result['probabilities'])}"
    )
    if args.wandb_project:
        import wandb

        wandb.init(project=args.wandb_project, job_type="tanda", config=result["config"])
        log_to_wandb(result)
        wandb.finish()
    else:
        log_to_wandb(result)
    if args.out:
        recipe = "data.augment: [" + "{class_path: TandaAugment, init_args: {policy_path: " + str(args.out) + "} }]"
        print(f"saved {save_policy(result, args.out)}; use it with {recipe}")
    return result


def _stacked(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [dataset[i] for i in range(len(dataset))]
    return torch.stack([s[0] for s in samples]).float(), torch.tensor([int(s[1]) for s in samples])


def _small_cnn(channels: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.LazyLinear(64),
        nn.ReLU(),
        nn.Linear(64, classes),
    )


def _train_and_test(train, test, augment: TandaAugment | None, epochs: int, seed: int) -> float:
    (x, y), (xt, yt) = train, test
    torch.manual_seed(seed)
    model = _small_cnn(x.shape[1], int(y.max()) + 1)
    model(x[:1])  # materialize the lazy layer before the optimizer sees it
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(32):
            images = x[idx] if augment is None else augment.augment_batch(x[idx], g)
            loss = nn.functional.cross_entropy(model(images), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).float().mean())


def compare(args: argparse.Namespace) -> dict:
    """No augmentation vs uniform sequences vs the learned policy over the same TFs; mean ± std test accuracy."""
    torch.set_num_threads(max(1, args.threads))
    dm = datamodule(args)
    dm.setup()
    x, y = _stacked(dm.splits.train)
    test = _stacked(dm.splits.test)
    if args.policy:
        policy_path = args.policy
    else:  # learn on the whole training split: TANDA needs no labels
        ns = argparse.Namespace(**{**vars(args), "out": args.out or "tanda_compare_policy.pt", "wandb_project": None})
        learn(ns)
        policy_path = ns.out
    learned = TandaAugment(policy_path=policy_path, min_probability=0.0)  # as learned, no pruning: a fair comparison
    uniform = TandaAugment(policy_path=None, tfs=learned.tf_names, length=learned.policy.length, min_probability=0.0)
    results: dict[str, list[float]] = {"none": [], "uniform": [], "learned": []}
    for seed in range(args.seeds):
        subset = torch.randperm(len(x), generator=torch.Generator().manual_seed(1000 + seed))[: args.train_size]
        train = (x[subset], y[subset])
        for name, augment in (("none", None), ("uniform", uniform), ("learned", learned)):
            results[name].append(_train_and_test(train, test, augment, args.epochs, seed))
            print(f"seed {seed}  {name:<8} test accuracy {results[name][-1]:.4f}", flush=True)
    print(f"\n{args.train_size} training images, {args.epochs} epochs, {args.seeds} seeds, {len(test[1])} test images")
    for name, accs in results.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{name:<8} {statistics.mean(accs):.4f} ± {std:.4f}")
    return results


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.tanda", description=__doc__.split("\n")[0])
    sub = main.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--config", default=None, help=f"training config whose data: section to use (default: {DEFAULT_CONFIG})")
    shared.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help="data option override")
    shared.add_argument(
        "--steps", type=int, default=300, help="adversarial steps (one D and one generator update each)"
    )
    shared.add_argument("--length", type=int, default=3, help="TF sequence length L")
    shared.add_argument("--variant", choices=VARIANTS, default="mean_field")
    shared.add_argument(
        "--tfs", default=None, help="comma-separated TF names (default: the benign ones and invert; also: rotate_180)"
    )
    shared.add_argument("--batch-size", type=int, default=64)
    shared.add_argument("--alpha", type=float, default=1.0, help="weight of the distance penalty")
    shared.add_argument("--margin", type=float, default=0.05, help="mean |h(x)-x| below which the penalty applies")
    shared.add_argument("--entropy", type=float, default=0.1, help="entropy bonus against mode collapse")
    shared.add_argument("--max-images", type=int, default=5000, help="training images used to learn the policy")
    shared.add_argument("--seed", type=int, default=0)
    shared.add_argument("--threads", type=int, default=torch.get_num_threads())
    learn_parser = sub.add_parser("learn", parents=[shared], help="learn a policy on the training split and save it")
    learn_parser.add_argument("--out", default="policies/tanda.pt")
    learn_parser.add_argument("--wandb-project", default=None, help="also log the TF probabilities to a new W&B run")
    compare_parser = sub.add_parser("compare", parents=[shared], help="none vs uniform vs learned augmentation")
    compare_parser.add_argument("--policy", default=None, help="a saved policy (default: learn one first)")
    compare_parser.add_argument("--out", default=None, help="where to save the policy it learns")
    compare_parser.add_argument("--train-size", type=int, default=200)
    compare_parser.add_argument("--seeds", type=int, default=3)
    compare_parser.add_argument("--epochs", type=int, default=30)
    return main


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    for name in ("steps", "length", "batch_size", "max_images"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}={getattr(args, name)}: use 1 or more.")
    return learn(args) if args.command == "learn" else compare(args)


if __name__ == "__main__":
    main()
