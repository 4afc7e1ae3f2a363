"""Studies on real Fashion-MNIST: each one a `compare` run (arms x seeds, paired 95 % CIs) of the project's
recipes, written to docs/studies/<name>.md with its figure, CSV and the published figure it reproduces.

    make study NAME=regularization DATA=/path/to/root    # one study; DATA holds FashionMNIST/raw/
    python benchmarks/fashion_studies.py --list           # the studies, their comparisons and run counts
    python benchmarks/fashion_studies.py --only regularization --data ROOT [--jobs 2] [--page-only]

Every study trains through a project generated from the template (`dataset=fashion_mnist`, CSV logger)
in build/fashion-studies/, with `<package> compare`: the same command line a user would type, so the
evidence is about the code users run. A study is a few comparisons; each lives in
docs/studies/<name>/<comparison>-<definition hash>/compare-<id>/ (the hash covers the baseline and arm
YAML, so a changed definition never mixes with old results). A finished run's result is a small JSON
kept there and committed: the same command continues a killed study, in this session or a later one,
training only the runs that have no result. Run logs and checkpoints stay in build/.

Where the paired CI of an arm's test accuracy contains 0 after 3 seeds, the comparison grows to 5 seeds
(the 3 finished runs are reused). Verdicts are compare's: `better`/`worse` only when the paired 95 % CI
excludes 0. Torchvision downloads Fashion-MNIST when DATA has no copy and the network is there.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "studies"
WORK = REPO / "build" / "fashion-studies"
PACKAGE = "fashion_studies"
FIRST_SEEDS, MORE_SEEDS = (0, 1, 2), (0, 1, 2, 3, 4)

# The network every study trains unless it says otherwise: the sized convnet at Fashion-MNIST's native
# 28x28, one 3x3 conv per stage, widths 16-32-64. At the default width (two convs per stage, 32-64-128,
# 32px) one 51k-image epoch takes about 4 min on these 2 cores; this one trains ~6x faster, which buys
# 3 seeds x every arm within a study's 40-minute budget. Its scale (91-92 % after a few epochs at full size)
# is the "simple CNN" regime of the published Fashion-MNIST benchmarks.
SMALL_NET = {"widths": [16, 32, 64], "convs_per_stage": 1}
COMMON = {
    # Validation (best-checkpoint choice) on 24 batches = 3,072 of the 9,000 validation images: a full pass
    # every epoch would cost a third of a subset run. The test split is always whole (10,000).
    "trainer": {"enable_progress_bar": False, "log_every_n_steps": 20, "limit_val_batches": 24},
    "data": {"image_size": 28, "download": True, "batch_size": 128, "num_workers": 0},
    "model": {"backbone_options": SMALL_NET},
}


def merged(*parts: dict) -> dict:
    """Dicts merged key by key (nested dicts merged, everything else replaced), later parts winning."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass(frozen=True)
class Comparison:
    """One `compare` run: `arms` (name -> project recipe names or inline YAML dicts) against `baseline`
    (YAML merged over the project's configs/default.yaml)."""

    key: str
    label: str
    baseline: dict
    arms: dict[str, tuple]
    seeds: tuple[int, ...] = FIRST_SEEDS


@dataclass(frozen=True)
class Published:
    """A published figure the study reproduces: the arm, the test error without and with the trick (%)."""

    arm: str
    source: str
    error_without: float
    error_with: float


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    claim: str
    setup: str
    comparisons: tuple[Comparison, ...]
    published: tuple[Published, ...] = ()
    notes: str = ""
    # Files a study's arms read, made once and kept in docs/studies/<name>/ (committed), then copied into the
    # project: project-relative path -> the command (run in the project) that writes it to {out}.
    prepared: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Work after the comparisons (run in the project folder, or None with --page-only) that returns page lines.
    after: Callable[[Study, Path | None], list[str]] | None = None


TANDA_POLICY = "studies/augmentation/tanda-policy.pt"
NO_DECAY = {"model": {"optimizer": {"init_args": {"weight_decay": 0.0}}}}


def cosine(epochs: int) -> dict:
    return {"model": {"lr_scheduler": {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
                                       "init_args": {"T_max": epochs}}}}


def regularization() -> Study:
    subset = merged(COMMON, NO_DECAY, {"trainer": {"max_epochs": 15}, "data": {"train_fraction": 0.1}}, cosine(15))
    # Full size: 3 epochs, the budget the LR study's schedules got on the same split (95 % CI +-0.4 points
    # under cosine); the first run here had 2, and a CI of +-1.6 points on the baseline hid every difference.
    full = merged(COMMON, NO_DECAY, {"trainer": {"max_epochs": 3}}, cosine(3))
    # The dropout recipe's `backbone_options` replace the baseline's whole dict (jsonargparse replaces a dict
    # value), which put the first run's dropout arms on the default widths, 12x the study's network: its
    # options are given here together with the study's widths.
    recipe = yaml.safe_load((REPO / "recipes" / "regularize" / "dropout.yaml").read_text())
    dropout = {"model": {"backbone_options": {**SMALL_NET, **recipe["model"]["backbone_options"]}}}
    arms = {"l2": ("regularize/l2",), "l1-l2": ("regularize/l1-l2",), "max-norm": ("regularize/max-norm",),
            "dropout-l2": (dropout, "regularize/l2"), "dropout-max-norm": (dropout, "regularize/max-norm")}
    return Study(
        "regularization", "Regularization: none, L2, L1+L2, max-norm, dropout+L2, dropout+max-norm",
        "The lecture's regularization part (after Srivastava et al. 2014, Table 9, MNIST): every penalty lowers "
        "test error, dropout + max-norm most (1.62 % with L2 down to 1.05 %). Regularization should matter most "
        "when data are scarce.",
        "Two regimes, the same six arms: a stratified 10 % training subset (5,100 images, 15 epochs) and the "
        "full 51,000-image training split (3 epochs: what the 40 minutes allow for 30 runs), both with SGD (lr 0.1, Nesterov momentum 0.9) and a cosine "
        "schedule, no weight decay in the baseline (the `none` arm). Dropout is `regularize/dropout`'s "
        "stage dropout 0.1/0.2/0.3 plus 0.5 before the classifier, on the study's widths.",
        (Comparison("subset-10", "10 % of the training split", subset, arms),
         Comparison("full", "the full training split", full, arms)),
        published=(Published("dropout-max-norm", "Srivastava et al. 2014, Table 9 (MNIST; their reference is L2, "
                             "ours is no regularization; the row for our `l2` arm is in the table above)", 1.62, 1.05),),
        notes="**Reading.** On this network dropout costs accuracy, and the weight penalties do nothing "
              "detectable. In the scarce regime the baseline overfits (training accuracy 0.976, validation 0.883 at "
              "the end; means over 5 seeds from the runs' logs), yet dropout at the recipe's rates (0.1/0.2/0.3 per "
              "stage, 0.5 before a 64-unit classifier) leaves a 24 K-parameter network no capacity to spare: "
              "training accuracy with dropout active ends at 0.80 and validation at 0.83, and test accuracy is 4.8 "
              "and 5.0 points lower with L2 or max-norm beside it, NLL and ECE worse too. Srivastava et al. "
              "trained wide networks (their rule of thumb: a layer of n units needs about n/p under dropout). L2 "
              "and L1+L2 improve calibration only (ECE -0.003 and -0.004, both `better`); max-norm at c = 3 never "
              "binds here (its runs end within 0.15 points of the baseline's, seed by seed). At full size and 3 "
              "epochs there is no gap to close (training accuracy 0.914, validation 0.906 at the end): the penalties "
              "are within noise on all three metrics and dropout costs 3.9 and 4.1 points (training accuracy 0.82 "
              "under dropout). Regularize for the gap the training figures show (D3 names it); here it is small or "
              "none.\n\n"
              "A first run of this study (kept in git history, commit ccf0e9a) found dropout + L2 `better` (+0.80 "
              "points): its dropout arms had trained the project's default widths by mistake (288 K parameters "
              "against 24 K; the recipe's `backbone_options` replaced the study's, which the CLI now says at start). "
              "What helped there was a 12x network with dropout, not dropout on this one; a study of dropout on a "
              "network with capacity to spare is the next one to run.",
    )


def augmentation() -> Study:
    base = merged(COMMON, {"trainer": {"max_epochs": 8}, "data": {"train_fraction": 0.2}}, cosine(8))
    vflip = {"data": {"allow_identity_changing": True, "augment+": [
        {"class_path": "torchvision.transforms.v2.RandomVerticalFlip", "init_args": {"p": 0.5}}]}}
    arms = {"flip": ("augment/flip",), "v-flip": (vflip,), "pad-crop": ("augment/pad-crop",),
            "random-erasing": ("augment/random-erasing",), "random-resized-crop": ("augment/random-resized-crop",),
            "random-combination": ("augment/random-combination",), "mixup": ("augment/mixup",),
            "cutmix": ("augment/cutmix",),
            "tanda": ({"data": {"augment+": [{"class_path": "TandaAugment", "init_args": {
                "policy_path": TANDA_POLICY, "length": 3, "min_probability": 0.01}}]}},)}
    return Study(
        "augmentation", "Data augmentation on Fashion-MNIST",
        "The lecture's augmentation part: label-preserving transforms enlarge the training set and lower test "
        "error; a transform that changes what the image shows (a vertical flip turns a shoe upside down) does not. "
        "Random Erasing (Zhong et al. 2017) reports Fashion-MNIST test error 4.01 % -> 3.65 % (WRN-28-10).",
        "A stratified 20 % training subset (10,200 images, 8 epochs, cosine LR) where augmentation has room to "
        "help; the arms are the project's recipes as shipped, plus a vertical flip (declared identity-changing "
        "for clothes, allowed here to measure it). TANDA's policy (sequences of 3 transforms) is learned on "
        "the same 20 % subset first (`tanda learn --steps 300`, seed 0; kept as `augmentation/tanda-policy.pt`).",
        (Comparison("subset-20", "20 % of the training split", base, arms),),
        published=(Published("random-erasing", "Zhong et al. 2017 (Fashion-MNIST, WRN-28-10)", 4.01, 3.65),),
        notes="**Reading.** At this budget augmentation is not what the model lacks. The baseline ends its 8 epochs "
              "with a generalization gap of 4.2 points (training accuracy of the last epoch, on augmented images where "
              "there are any, 0.938 against validation "
              "0.896, mean of its seeds' logs); flip and random erasing halve that gap (2.3 and 2.0 points) and keep "
              "validation accuracy (0.894 both), so they cost little; the geometric transforms as shipped (pad 4 then "
              "crop, random-resized-crop from 50 % of the area, the random combination, TANDA) close the gap and go "
              "past it: training accuracy ends below validation (0.835-0.862 against 0.849-0.866), the model "
              "underfits. Zhong et al. trained a WRN-28-10 for 300 epochs, where the gap is the whole problem; with "
              "8 epochs of a 16-32-64 net, the transforms slow fitting more than they save from overfitting. The "
              "tuned recipe (`trainer/fashion-mnist-fast`, a 4x wider net, 13 epochs) keeps flip and a milder "
              "pad-crop of 2 pixels. Try the `compare` command above on your own budget before you settle.\n\n"
              "Data path: the generated config's `data.device_augment: auto` augments each batch from one tensor; "
              "TANDA's learned policy has no batched form, so that arm falls back to per-sample augmentation in the "
              "DataLoader (the same transforms, slower; its training time is not comparable to the others').",
        prepared={TANDA_POLICY: ("tanda", "learn", "--data", "image_size=28", "--data", "train_fraction=0.2",
                                 "--steps", "300", "--length", "3", "--seed", "0", "--out", "{out}")},
    )


def constant_lr_subset(backbone_options: dict, epochs: int, lr: float) -> dict:
    """A 20 % stratified subset, this net, SGD at a constant `lr`, no weight decay."""
    return merged(COMMON, NO_DECAY, {"trainer": {"max_epochs": epochs}, "data": {"train_fraction": 0.2},
                                     "model": {"backbone_options": backbone_options, "lr_scheduler": None,
                                               "optimizer": {"init_args": {"lr": lr}}}})


def init() -> Study:
    # 19 layers (6 convs per stage x 3 + the classifier), no BatchNorm: where the init decides whether the
    # signal survives. A constant LR of 0.001 with momentum: at 0.01 (the first run of this study) every init
    # that left chance fell back to it on some seeds (validation 0.55 -> 0.10 from one epoch to the next),
    # so the comparison measured instability; at 0.001 He's seed 2 (0.15 at 0.01) reached 0.80 in 5 epochs.
    deep = {"widths": [16, 32, 64], "convs_per_stage": 6, "batch_norm": False}
    base = constant_lr_subset(deep, epochs=5, lr=0.001)
    arms = {name: (f"init/{name}",) for name in ("zero", "small-random", "calibrated", "he", "orthogonal", "lsuv")}
    return Study(
        "init", "Initialization at depth: zero, small random, calibrated, He, orthogonal, LSUV",
        "The lecture's initialization part (He et al. 2015): in a deep plain ReLU net He init (variance 2/n) "
        "trains where the calibrated 1/n init (Xavier-like) stalls; zero init keeps every unit identical and small "
        "random init shrinks the signal to nothing: neither learns. Orthogonal (Saxe et al. 2014) and LSUV "
        "(Mishkin & Matas 2016) train as He does.",
        "19-layer plain ReLU convnet without BatchNorm (widths 16-32-64, six 3x3 convs per stage), a stratified 20 % "
        "training subset (10,200 images), 5 epochs, SGD lr 0.001 Nesterov momentum 0.9 constant, no weight decay. The "
        "`none` arm is PyTorch's default init (Kaiming-uniform with a=sqrt(5), variance 1/(3n)).",
        (Comparison("depth-19", "19 layers, no BatchNorm", base, arms),),
        notes="**Reading.** The lecture's order holds, and by a wide margin. He, LSUV and orthogonal train (test "
              "0.79, 0.78 and 0.75 after 5 epochs, all `better` by 65-69 points); PyTorch's default, zero and small "
              "random init end at exactly 0.1000 on every seed, and the calibrated 1/n init leaves chance only just "
              "(0.15, `better` by +5.2 [+2.0, +8.4] points, validation 0.11-0.14 throughout). The arithmetic of "
              "variances says why: a ReLU layer passes on half of its input's variance times n times the weights' "
              "variance, so He's 2/n keeps the signal's scale through the 18 convolutions, 1/n halves it at each "
              "(2^-18, about 4e-6, at the classifier) and PyTorch's default 1/(3n) divides it by 6 each time. Zero "
              "and small random init give exactly uniform outputs (NLL ln 10 = 2.3026, which is why their NLL reads "
              "`better` than the default init's 2.305: neither has learned anything). LSUV leaves chance first "
              "(validation 0.32 after epoch 1, He 0.18, orthogonal 0.24; means over 5 seeds from the runs' logs): it "
              "scales every layer to unit output variance on a real batch rather than by the formula. Orthogonal "
              "with gain sqrt(2) spreads most over seeds (test 0.61-0.81).\n\n"
              "**Against the published figure.** He et al. 2015 (Figs. 2-3, plain ReLU nets on ImageNet): at 22 "
              "layers both inits converge and theirs sooner; at 30 layers Xavier's stalls and theirs trains. At 19 "
              "layers without BatchNorm, the calibrated init here behaves like their 30-layer case within 5 epochs "
              "(it may still leave chance later; their 22-layer Xavier run took longer to start too): the same "
              "direction, and the same kind of gap: one trains, the other does not.\n\n"
              "A first run at lr 0.01 (35 runs, 50.6 min, kept in `init/depth-19-41b355/`) measured stability "
              "more than the init: validation accuracy of He, LSUV, orthogonal and calibrated runs jumped to "
              "0.25-0.68 and fell back to chance between epochs, so He's paired CI contained 0 (+0.26 [-0.05, "
              "+0.57]) while calibrated (+0.10 [+0.02, +0.19]) and LSUV came out `better`; PyTorch's default, "
              "zero and small random init stayed at exactly 0.1000 on all 5 seeds there as well.",
    )


def activations() -> Study:
    plain = {"widths": [16, 32, 64], "convs_per_stage": 2, "batch_norm": False}
    base = constant_lr_subset(plain, epochs=4, lr=0.02)
    names = ("sigmoid", "tanh", "leaky-relu", "prelu", "rrelu", "elu", "gelu", "silu", "maxout")
    arms = {name: (f"activation/{name}",) for name in names}
    return Study(
        "activations", "Activation functions: sigmoid, tanh and the ReLU family after a short budget",
        "The lecture's activation part: the ReLU family (ReLU, Leaky ReLU, PReLU, RReLU, Maxout) trains much faster "
        "than sigmoid/tanh (Krizhevsky et al. 2012: ReLU reaches 25 % CIFAR-10 training error six times sooner than "
        "tanh); within the family the differences are small.",
        "Plain convnet without BatchNorm (BN would hide saturation; widths 16-32-64, two 3x3 convs per stage, "
        "PyTorch's default init), a stratified 20 % training subset, 4 epochs, SGD lr 0.02 Nesterov momentum 0.9 "
        "constant: a short budget, so test accuracy measures how fast each activation trains. The baseline is ReLU.",
        (Comparison("plain-6", "6 conv layers, no BatchNorm", base, arms),),
        notes="**Against the published figure.** Krizhevsky et al. 2012 (Fig. 1, a 4-layer CNN on CIFAR-10): ReLU "
              "reaches 25 % training error six times sooner than tanh. Here the direction is the opposite at this "
              "init: mean validation accuracy after each of the 4 epochs (5 seeds, from the runs' logs) is ReLU "
              "0.15 / 0.31 / 0.55 / 0.69 against tanh 0.51 / 0.63 / 0.71 / 0.75: tanh after one epoch is about "
              "where ReLU is after three; test accuracy +7.3 points for tanh, CI [-3.9, +18.4], no detectable "
              "difference. ReLU's first epoch is a plateau near chance on every seed. The likely reason is the "
              "init, not the activation alone: PyTorch's default conv init has variance 1/(3 fan-in), so each ReLU "
              "layer keeps about 1/6 of the signal's variance where tanh (slope 1 at 0) keeps about 1/3; GELU and "
              "SiLU (slope 1/2 at 0) and sigmoid (1/4) keep less still and do not leave chance in 4 epochs (all "
              "three `worse`, NLL stuck at ln 10). Krizhevsky et al. initialized for ReLU. The ReLU family itself "
              "is close to the lecture: Maxout learns fastest (`better`, +13.2 points [+1.6, +24.8]) at twice the "
              "cost (two pieces per unit: 144 K parameters and 29 M FLOPs per image against 72 K and 15 M, "
              "training time 90 s against 42 s), ELU and "
              "RReLU are `better` on NLL, all four are ahead of ReLU's accuracy in the mean but within noise. Pair an activation with the init made for it "
              "(`init/he` for the ReLU family; the init study shows what it changes at depth).",
    )


def lr_schedules() -> Study:
    # Every run carries the LR-curve diagnosis (D1/D2): the page shows what it called each rate.
    diagnosis = yaml.safe_load((REPO / "recipes" / "diagnose" / "lr-curve.yaml").read_text())
    constant = merged(COMMON, diagnosis, {"trainer": {"max_epochs": 4}, "data": {"train_fraction": 0.2},
                                          "model": {"lr_scheduler": None}})
    rates = {f"lr-{rate:g}": ({"model": {"optimizer": {"init_args": {"lr": rate}}}},) for rate in (1.0, 0.01, 0.001)}
    full = merged(COMMON, {"trainer": {"max_epochs": 3}, "model": {"lr_scheduler": None}})
    schedules = {"plateau": ("train/plateau",), "one-cycle": ("train/one-cycle",),
                 "warmup-cosine": ("train/warmup-cosine",), "cosine": (cosine(3),)}
    return Study(
        "lr", "Learning rate and its schedule",
        "The lecture's LR part (CS231n's four curves): too high a rate explodes or stalls high, too low a rate "
        "crawls, a good one drops fast and keeps improving; annealing the rate (step/plateau, cosine, one-cycle "
        "with warm-up, Smith 2018) ends lower than a constant rate.",
        "Constant rates 1, 0.1 (the `none` arm, the default config's rate), 0.01 and 0.001 with SGD Nesterov "
        "momentum 0.9 and weight decay 5e-4, a stratified 20 % subset, 4 epochs; then the full training split for "
        "3 epochs at lr 0.1 with no schedule (`none`) against plateau, one-cycle, warm-up + cosine and cosine.",
        (Comparison("constant-rates", "constant learning rates (20 % subset)", constant, rates),
         Comparison("schedules", "schedules at lr 0.1 (full training split)", full, schedules)),
        notes="**Reading.** The lecture's claims hold in direction: 1 and 0.001 end worse than 0.1 (-9.7 and -11.4 "
              "points), 0.01 is within noise of 0.1 on accuracy but worse on NLL; every annealed schedule ends "
              "better than the constant rate (cosine +2.0 points, one-cycle +3.1, warm-up + cosine +3.2, all with "
              "CIs above 0). `plateau` is identical to `none` on every seed: its patience is 2 epochs, so in a "
              "3-epoch run it can never cut the rate; it is a schedule for long runs. Smith & Topin (2018) report "
              "one-cycle reaching a given accuracy in far fewer epochs than a constant rate on CIFAR-10; here "
              "one-cycle and warm-up + cosine are indistinguishable from each other (0.9088 vs 0.9096), and both "
              "beat constant 0.1 in the same 3 epochs.\n\n"
              "**What the diagnosis says, and what it cannot.** D1 reads the shape of one curve. It calls lr 1 "
              "noisy (D2, on 4 of 5 seeds) and every rate here a \"good LR\", including 0.001: that run's loss "
              "falls from 2.3 to about 1.0 in 320 steps and bends (in seed 0 the second half falls about half as much as "
              "the first), which is the good shape; nothing in one curve says the same network gets to 0.45 at lr "
              "0.1. That question is the comparison's: `compare` over rates, as above.",
    )


ENSEMBLE_EPOCHS = 9  # the budget every arm gets; the seeds ensemble spends it on 3 members of 3 epochs


def ensembles() -> Study:
    single = merged(COMMON, {"trainer": {"max_epochs": ENSEMBLE_EPOCHS}, "data": {"train_fraction": 0.2}},
                    cosine(ENSEMBLE_EPOCHS))
    short = merged(single, {"trainer": {"max_epochs": ENSEMBLE_EPOCHS // 3}}, cosine(ENSEMBLE_EPOCHS // 3))
    arms = {name: (f"ensemble/{name}",) for name in ("snapshot", "checkpoints", "ema", "swa")}
    return Study(
        "ensembles", "Ensembles at a matched training budget: snapshot, top-k checkpoints, EMA, SWA, seeds",
        "The lecture's ensemble part: several models beat one, and snapshot ensembles (Huang et al. 2017) get most of "
        "that for the price of one training run (CIFAR-10 with a 40-layer DenseNet: 5.24 % -> 4.99 % error at the same "
        "budget, their Table 2 row with alpha0 = 0.2; the gain grows with the budget). Averaging weights (Polyak/EMA; "
        "SWA, Izmailov et al. 2018) gives a flatter, better-calibrated single model. Ensembles are known to win most on "
        "calibration (NLL, ECE; Lakshminarayanan et al. 2017), less on accuracy.",
        f"Every arm spends the same {ENSEMBLE_EPOCHS} epochs on a stratified 20 % subset (10,200 images): one model "
        "with a cosine schedule (`none`); the snapshot recipe (3 cosine cycles, the 3 snapshots averaged); the top-3 "
        "checkpoints by validation loss averaged; EMA of the weights (decay 0.99 per step); SWA from 60 % of the run. "
        f"The seeds ensemble trains 3 models of {ENSEMBLE_EPOCHS // 3} epochs (seeds 0-8, grouped 0-2, 3-5, 6-8) and "
        "averages their probabilities; it has no seed-by-seed partner, so its difference to `none` is unpaired (Welch).",
        (Comparison(f"budget-{ENSEMBLE_EPOCHS}", f"{ENSEMBLE_EPOCHS} epochs per arm", single, arms),
         Comparison(f"short-{ENSEMBLE_EPOCHS // 3}", f"{ENSEMBLE_EPOCHS // 3}-epoch members for the seeds ensemble",
                    short, {}, seeds=tuple(range(9)))),
        published=(Published("snapshot", "Huang et al. 2017, Table 2 (CIFAR-10, DenseNet-40, single model -> snapshot "
                             "ensemble at the same budget)", 5.24, 4.99),),
        after=seed_ensembles,
        notes="**Reading.** At 9 epochs nothing that averages beats one cosine run on accuracy, and the members show "
              "why. The snapshot cycles end at validation 0.867, 0.888 and 0.896 (means over the 5 seeds, from the "
              "runs' logs); their ensemble, 0.890, sits below its own last member: the first snapshot has had 3 epochs "
              "and is 3 points behind, and averaging it in costs more than its diversity adds. The ensemble does beat "
              "its members' mean NLL (0.317 against 0.326) but not one 9-epoch model annealed to 0 (0.299), and its ECE "
              "rises from 0.007 to 0.023. The same holds for the seeds ensemble: three 3-epoch members (0.859 alone) "
              "give 0.875, 1.6 points above a member, the largest gain over its own members here, and still 2.0 points "
              "below one model that spent the 9 epochs in one run. The top-3 checkpoints by validation loss are the "
              "last epochs of one cosine run (validation 0.881, 0.891, 0.897), too alike to help (-0.25 [-0.51, +0.01]). "
              "SWA replaces the cosine's final anneal with a constant 0.01 from epoch 5; the average of those epochs ends "
              "0.43 points below the anneal to 0. EMA is the one with a calibration gain, small but with both CIs below "
              "0 (NLL -0.0024, ECE -0.0012), at the same accuracy; its validation accuracy leads by 2-4 points from "
              "epoch 3 to 6 (0.852 against 0.823 after epoch 3) and the lead closes as the learning rate goes to 0, "
              "so EMA is what helps a run stopped before its schedule ends.\n\n"
              "**Against the published figure.** Huang et al. 2017 trained 300 epochs in 6 cycles of 50, so each of "
              "their snapshots is a converged model; here a cycle is 3 epochs and the single model's validation "
              "accuracy still rises 0.6-1.0 points per epoch at its end. Opposite direction (-0.64 points against "
              "their +0.25), and the reason is the budget, which the paper names as well (the gain grows with it). "
              "What to take from it: while more epochs still help one model, spend them on one model with a cosine "
              "schedule and add EMA (it costs one copy of the weights); ensembles (snapshots, seeds: `<package> "
              "ensemble test`) pay once a single run has converged.",
    )


def seed_ensembles(study: Study, folder: Path | None) -> list[str]:
    """Ensembles of three short runs (seeds 0-2, 3-5, 6-8: `<package> ensemble test` on their best checkpoints),
    kept in docs/studies/ensembles/seed-ensembles.json, against the single model of the first comparison."""
    short = study.comparisons[1]
    found = read_results(DOCS / study.name / f"{short.key}-{definition_hash(short)}")
    cache = DOCS / study.name / "seed-ensembles.json"
    measured = json.loads(cache.read_text()) if cache.is_file() else {}
    if found is not None and folder is not None:
        runs = found[0] / "runs"
        for group in ((0, 1, 2), (3, 4, 5), (6, 7, 8)):
            key = "-".join(map(str, group))
            if key in measured:
                continue
            members = [json.loads((runs / f"baseline-seed{s}.json").read_text())["checkpoint"] for s in group]
            out = subprocess.run([sys.executable, "-m", PACKAGE, "ensemble", "test", *members, "--accelerator=cpu"],
                                 cwd=folder, env=_env(folder), check=True, capture_output=True, text=True).stdout
            # "test/acc of the ensemble: 0.9123  (test/nll 0.2500, test/ece 0.0200)"
            found_line = re.search(r"test/acc of the ensemble: (\S+)\s+\(test/nll (\S+), test/ece (\S+)\)", out)
            measured[key] = dict(zip(("test_acc", "test_nll", "test_ece"), map(float, found_line.groups()), strict=True))
            cache.write_text(json.dumps(measured, indent=2))
    single = study.comparisons[0]
    base = read_results(DOCS / study.name / f"{single.key}-{definition_hash(single)}")
    if len(measured) < 3 or base is None:
        return ["### seeds ensemble", "", f"{len(measured)} of 3 ensembles measured so far.", ""]
    baseline_runs = sorted((base[0] / "runs").glob("baseline-seed*.json"))
    lines = ["### seeds ensemble (3 members x 3 epochs) against one model of 9 epochs", "",
             "| metric | one model (`none`) [95% CI] | seeds ensemble [95% CI] | difference, unpaired [95% CI] | verdict |",
             "|---|---|---|---|---|"]
    for metric, higher in (("test_acc", True), ("test_nll", False), ("test_ece", False)):
        ours = [m[metric] for m in measured.values()]
        ref = [float(json.loads(r.read_text())[metric]) for r in baseline_runs]
        (mean_a, lo_a, hi_a), (mean_b, lo_b, hi_b) = interval(ref), interval(ours)
        diff, lo, hi = welch(ours, ref)
        verdict = STATS.verdict(STATS.Interval(diff, lo, hi, 0.0, len(ours)), higher)
        lines.append(f"| {metric} | {mean_a:.4f} [{lo_a:.4f}, {hi_a:.4f}] | {mean_b:.4f} [{lo_b:.4f}, {hi_b:.4f}] | "
                     f"{diff:+.4f} [{lo:+.4f}, {hi:+.4f}] | {verdict} |")
    return [*lines, ""]


def _compare_stats():
    """The project's own statistics (compare/stats.py: Student-t intervals, verdicts), read from the template:
    a plain module, so the pages use the very rules `compare` applies."""
    import importlib.util

    path = REPO / "template" / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}" / "compare" / "stats.py"
    spec = importlib.util.spec_from_file_location("compare_stats", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


STATS = _compare_stats()


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval (compare's `mean_interval`)."""
    found = STATS.mean_interval(values)
    return found.mean, found.low, found.high


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) with its 95 % Welch interval (unequal variances, unpaired); the degrees of freedom
    rounded down for compare's Student-t quantile, which makes the interval slightly wider, never narrower."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    diff = statistics.fmean(a) - statistics.fmean(b)
    half = STATS.t_quantile(0.975, max(1, math.floor(df))) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


STUDIES = {study.name: study for study in (regularization(), augmentation(), init(), activations(), lr_schedules(),
                                           ensembles())}


# -- running ---------------------------------------------------------------------------------------
def definition_hash(comparison: Comparison) -> str:
    key = json.dumps({"baseline": comparison.baseline, "arms": comparison.arms}, sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:6]


def project(data: Path) -> Path:
    """The generated project (regenerated from the current template) with `data` linked as its data root."""
    from cookiecutter.main import cookiecutter

    shutil.rmtree(REPO / "template" / ".ruff_cache", ignore_errors=True)
    folder = Path(cookiecutter(str(REPO), no_input=True, output_dir=str(WORK), overwrite_if_exists=True,
                               extra_context={"project_name": "Fashion Studies", "dataset": "fashion_mnist", "logger": "csv"}))
    link = folder / "data"
    if link.is_symlink():
        link.unlink()
    if not link.exists():  # a real folder there (an earlier download) is kept
        link.symlink_to(data.resolve())
    return folder


def write_yaml(path: Path, content: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


def compare_argv(study: Study, comparison: Comparison, folder: Path, seeds: tuple[int, ...], jobs: int) -> tuple[list[str], Path]:
    """The `compare` command line (run from the project folder) and its --root."""
    tag = definition_hash(comparison)
    files = folder / "studies" / study.name / f"{comparison.key}-{tag}"
    baseline = write_yaml(files / "baseline.yaml", comparison.baseline)
    argv = []
    for arm, recipes in comparison.arms.items():
        paths = []
        for i, recipe in enumerate(recipes):
            if isinstance(recipe, dict):
                paths.append(os.path.relpath(write_yaml(files / f"{arm}-{i}.yaml", recipe), folder))
            else:
                paths.append(f"recipes/{recipe}.yaml")
        argv += ["--arm", f"{arm}={','.join(paths)}"]
    root = DOCS / study.name / f"{comparison.key}-{tag}"
    argv = ["--root", str(root), *argv, "--seeds", *map(str, seeds), "--jobs", str(jobs), "--",
            "--config", "configs/default.yaml", "--config", os.path.relpath(baseline, folder)]
    return argv, root


def read_results(root: Path) -> tuple[Path, list[dict]] | None:
    """The comparison folder under `root` with a results.csv and the most seeds (the 5-seed comparison grown
    from the 3-seed one), and its rows. Not the newest by mtime: a checkout gives every file the same age."""

    def units(results: Path) -> int:
        manifest = results.parent / "manifest.json"
        return len(json.loads(manifest.read_text())["units"]) if manifest.is_file() else 0

    found = sorted(root.glob("compare-*/results.csv"), key=lambda p: (units(p), p.stat().st_mtime))
    if not found:
        return None
    with found[-1].open() as f:
        return found[-1].parent, list(csv.DictReader(f))


def undecided(rows: list[dict]) -> bool:
    """An arm whose paired CI on test accuracy contains 0 and has a width: more seeds could decide it. (A
    zero-width CI is two arms that gave the same accuracy on every seed, e.g. both stuck at chance; more seeds
    would not change it.)"""
    return any(r["metric"] == "test_acc" and r["verdict"] == "no detectable difference"
               and float(r["diff_ci_low"]) != float(r["diff_ci_high"]) for r in rows)


def prepare(study: Study, folder: Path) -> None:
    """Make (once, kept in docs/studies/) and copy into the project the files the study's arms read."""
    for relative, command in study.prepared.items():
        kept = DOCS / study.name / Path(relative).name
        if not kept.is_file():
            kept.parent.mkdir(parents=True, exist_ok=True)
            argv = [part.replace("{out}", str(kept)) for part in command]
            subprocess.run([sys.executable, "-m", PACKAGE, *argv], cwd=folder, env=_env(folder), check=True)
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kept, folder / relative)


def run_comparison(study: Study, comparison: Comparison, folder: Path, jobs: int) -> None:
    argv, root = compare_argv(study, comparison, folder, comparison.seeds, jobs)
    execute(argv, folder)
    found = read_results(root)
    if found and undecided(found[1]) and comparison.seeds == FIRST_SEEDS:
        more, _ = compare_argv(study, comparison, folder, MORE_SEEDS, jobs)
        done = found[0] / "runs"
        # The 3-seed results are runs of the same definition: the 5-seed comparison starts from them.
        target = _comparison_folder(more, folder)
        (target / "runs").mkdir(parents=True, exist_ok=True)
        for result in done.glob("*.json"):
            if not (target / "runs" / result.name).exists():
                shutil.copy2(result, target / "runs" / result.name)
        execute(more, folder)


def _comparison_folder(argv: list[str], folder: Path) -> Path:
    """Where `compare` will put this comparison (its own id rule, asked from the generated package)."""
    code = ("import sys; from fashion_studies.compare.command import build_comparison; "
            "print(build_comparison(sys.argv[1:])[0].folder)")
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=folder, env=_env(folder), capture_output=True,
                         text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _env(folder: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(folder / "src"), "WANDB_MODE": "offline"}


def execute(argv: list[str], folder: Path) -> None:
    wall = time.monotonic()
    subprocess.run([sys.executable, "-m", PACKAGE, "compare", *argv], cwd=folder, env=_env(folder), check=True)
    root = Path(argv[argv.index("--root") + 1])
    log = root / "wall_seconds.json"
    spent = json.loads(log.read_text()) if log.is_file() else []
    log.write_text(json.dumps([*spent, round(time.monotonic() - wall, 1)]))


# -- the page --------------------------------------------------------------------------------------
def _f(value: str, digits: int = 4, sign: bool = False) -> str:
    return f"{float(value):{'+' if sign else ''}.{digits}f}" if value not in ("", None) else ""


def comparison_section(study: Study, comparison: Comparison) -> tuple[list[str], dict]:
    root = DOCS / study.name / f"{comparison.key}-{definition_hash(comparison)}"
    found = read_results(root)
    if found is None:
        return [f"### {comparison.label}", "", "Not run yet: `make study NAME=" + study.name + "`.", ""], {}
    folder, rows = found
    manifest = json.loads((folder / "manifest.json").read_text())
    runs = sorted((folder / "runs").glob("*.json"))
    seconds = json.loads((root / "wall_seconds.json").read_text()) if (root / "wall_seconds.json").is_file() else []
    training = sum(float(json.loads(r.read_text())["train_seconds"]) for r in runs)
    figure = DOCS / f"{study.name}-{comparison.key}.png"
    shutil.copy2(folder / "compare.png", figure)
    shutil.copy2(folder / "results.csv", DOCS / f"{study.name}-{comparison.key}.csv")
    lines = [f"### {comparison.label}", "",
             f"{len(manifest['units'])} seeds x {len(manifest['arms'])} arm{'s' * (len(manifest['arms']) != 1)} = "
             f"{len(runs)} runs; wall time "
             f"{sum(seconds) / 60:.1f} min on {os.cpu_count()} cores, two runs at a time (every execution counted; "
             f"the runs' own training time adds up to {training / 60:.1f} min). Training times depend on what else the "
             "machine ran at the time; this page compares accuracy, NLL and ECE."
             if seconds else f"{len(runs)} runs.", "",
             f"`{manifest['command'].replace(str(REPO) + '/', '')}`", "",
             "| arm | test accuracy [95% CI] | vs none, paired [95% CI] | verdict | test NLL | vs none | verdict | ECE |",
             "|---|---|---|---|---|---|---|---|"]
    by = {(r["arm"], r["metric"]): r for r in rows}
    arms = list(manifest["arms"])
    for arm in arms:
        acc, nll, ece = by[(arm, "test_acc")], by[(arm, "test_nll")], by[(arm, "test_ece")]
        name = "none (baseline)" if arm == "baseline" else f"`{arm}`"
        diff = (f"{_f(acc['diff'], 4, True)} [{_f(acc['diff_ci_low'], 4, True)}, {_f(acc['diff_ci_high'], 4, True)}]"
                if acc["diff"] else "")
        ndiff = f"{_f(nll['diff'], 3, True)} [{_f(nll['diff_ci_low'], 3, True)}, {_f(nll['diff_ci_high'], 3, True)}]" if nll["diff"] else ""
        lines.append(f"| {name} | {_f(acc['mean'])} [{_f(acc['ci_low'])}, {_f(acc['ci_high'])}] | {diff} | {acc['verdict']} "
                     f"| {_f(nll['mean'], 3)} | {ndiff} | {nll['verdict']} | {_f(ece['mean'], 3)} |")
    evaluated: dict[str, set[str]] = {}
    for path in runs:
        evaluated.setdefault(path.stem.rpartition("-seed")[0], set()).add(json.loads(path.read_text()).get("evaluated", "best checkpoint"))
    if any(kinds != {"best checkpoint"} for kinds in evaluated.values()):
        lines += ["", "Tested: " + "; ".join(f"`{arm}` {', '.join(sorted(kinds))}" for arm, kinds in evaluated.items()) + "."]
    findings = _findings_by_arm(runs)
    if findings:
        lines += ["", "What the run's diagnostics concluded (runs per verdict):", "",
                  "| arm | findings |", "|---|---|"]
        lines += [f"| {'none (baseline)' if arm == 'baseline' else arm} | "
                  + "; ".join(f"{line} (x{count})" for line, count in found.items()) + " |" for arm, found in findings.items()]
    lines += ["", f"![{study.name} {comparison.key}]({figure.name})", ""]
    return lines, {arm: by for arm in arms} | {"_rows": by}


def _findings_by_arm(runs: list[Path]) -> dict[str, dict[str, int]]:
    """Arm -> {finding line: number of its runs that concluded it} (runs name themselves `<arm>-seed<n>`)."""
    out: dict[str, dict[str, int]] = {}
    for path in runs:
        arm = path.stem.rpartition("-seed")[0]
        for line in json.loads(path.read_text()).get("findings") or []:
            found = out.setdefault(arm, {})
            found[line] = found.get(line, 0) + 1
    return out


def published_lines(study: Study, results: dict[str, dict]) -> list[str]:
    lines = []
    for ref in study.published:
        drop = ref.error_without - ref.error_with
        lines.append(f"- **{ref.source}**: test error {ref.error_without:.2f} % -> {ref.error_with:.2f} % "
                     f"({drop:+.2f} points of accuracy, {drop / ref.error_without:.0%} of the error removed).")
        for key, by in results.items():
            row = by.get((ref.arm, "test_acc"))
            base = by.get(("baseline", "test_acc"))
            if not row or not base or not row["diff"]:
                continue
            error = 100 * (1 - float(base["mean"]))
            gain = 100 * float(row["diff"])
            same = "the same direction" if (gain > 0) == (drop > 0) else "the opposite direction"
            share = abs(gain) / error if error > 0 else 0.0
            share_text = f"{share:.1%}" if share < 0.1 else f"{share:.0%}"
            size = (f"{share_text} of our {error:.1f} % error removed" if gain >= 0
                    else f"{share_text} added to our {error:.1f} % error")
            lines.append(f"  - ours ({key}): {gain:+.2f} points [{100 * float(row['diff_ci_low']):+.2f}, "
                         f"{100 * float(row['diff_ci_high']):+.2f}], {row['verdict']}: {same}, {size}.")
    return lines


def verdict_lines(results: dict[str, dict]) -> list[str]:
    lines = []
    for key, by in results.items():
        arms = sorted({arm for arm, metric in by if metric == "test_acc" and arm != "baseline"})
        if not arms:  # a comparison that only trains the baseline (members for work after the comparisons)
            continue
        better = [a for a in arms if by[(a, "test_acc")]["verdict"] == "better"]
        worse = [a for a in arms if by[(a, "test_acc")]["verdict"] == "worse"]
        lines.append(f"- {key}: {len(better)} of {len(arms)} arms raise test accuracy with a paired CI above 0"
                     + (f" ({', '.join(better)})" if better else "") + "; "
                     + (f"{len(worse)} lower it ({', '.join(worse)})" if worse else "none lowers it") + ".")
    return lines


MARKER = "<!-- study on Fashion-MNIST: benchmarks/fashion_studies.py -->"
ALL = ("init", "activations", "regularization", "lr", "augmentation", "ensembles")


def write_index() -> Path:
    """docs/studies/README.md: each study's page, on Fashion-MNIST where it has run, else the digits version."""
    rows, pending = [], False
    for name in ALL:
        page = DOCS / f"{name}.md"
        if not page.is_file():
            continue
        text = page.read_text()
        if MARKER in text:
            verdicts = [line.removeprefix("- ").removesuffix(".") for line in text.splitlines()
                        if line.startswith("- ") and " arms raise " in line]
            minutes = sum(float(m) for m in re.findall(r"wall time ([\d.]+) min", text))
            rows.append(f"| {name} | Fashion-MNIST | [{name}.md]({name}.md) | {minutes:.1f} min | {'; '.join(verdicts)} |")
        else:
            pending = True
            rows.append(f"| {name} | digits (Fashion-MNIST pending) | [{name}.md]({name}.md) | | see the page |")
    lines = ["# Studies: the lecture's claims, measured", "",
             "Each study on real Fashion-MNIST is a `compare` run: every arm trained on the same seeds and tested on "
             "the same 10,000 test images; the verdicts come from paired 95 % confidence intervals. "
             "`make study NAME=<name> DATA=<folder with FashionMNIST/raw>` runs one (resumable; each is sized for 40 "
             "minutes on 2 cores at 3 seeds per arm, and the arms still undecided grow to 5 seeds: the wall time "
             "column is what each took, all its comparisons together)."
             + (" Pages not yet redone on Fashion-MNIST still show the earlier digits version (1,797 8x8 images; one "
                "test image is 0.37 % of error), marked as such." if pending else ""), "",
             "| Study | Data | Page | Wall time | Verdicts on test accuracy |", "|---|---|---|---|---|", *rows]
    index = DOCS / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index


def write_page(study: Study) -> Path:
    lines = [MARKER, f"# {study.title}", "", f"**Claim.** {study.claim}", "", f"**Setup.** {study.setup}",
             "Network, unless the setup above names another: the project's sized convnet at 28x28, widths "
             "16-32-64, one 3x3 conv per stage, BatchNorm, batch 128; seeds 0-2 per arm, 0-4 where a CI contained 0 after three. "
             "Reproduce: `make study NAME=" + study.name + " DATA=<folder with FashionMNIST/raw>`.", ""]
    results = {}
    for comparison in study.comparisons:
        section, by = comparison_section(study, comparison)
        lines += section
        if by:
            results[comparison.label] = by["_rows"]
    lines += ["## Verdicts (paired 95 % CIs, not means)", "", *verdict_lines(results), ""]
    if study.published:
        lines += ["## Against the published figure", "", *published_lines(study, results), ""]
    if study.after:
        lines += study.after(study, None)
    if study.notes:
        lines += [study.notes, ""]
    page = DOCS / f"{study.name}.md"
    page.write_text("\n".join(lines))
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(STUDIES), action="append")
    parser.add_argument("--data", type=Path, default=REPO / "data", help="folder holding FashionMNIST/raw/")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--page-only", action="store_true", help="write the pages from the results there are")
    args = parser.parse_args(argv)
    names = args.only or list(STUDIES)
    if args.list:
        for name in names:
            study = STUDIES[name]
            for c in study.comparisons:
                print(f"{name}/{c.key}: {len(c.arms) + 1} arms x {len(c.seeds)} seeds = {(len(c.arms) + 1) * len(c.seeds)} runs")
        return
    for name in names:
        study = STUDIES[name]
        if not args.page_only:
            folder = project(args.data)
            prepare(study, folder)
            for comparison in study.comparisons:
                run_comparison(study, comparison, folder, args.jobs)
            if study.after:
                study.after(study, folder)
        if not any(read_results(DOCS / name / f"{c.key}-{definition_hash(c)}") for c in study.comparisons):
            print(f"study {name}: no results yet; its page stays as it is", flush=True)
            continue
        print(f"study {name}: {write_page(study)}", flush=True)
    write_index()


if __name__ == "__main__":
    main()
