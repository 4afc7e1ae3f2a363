"""E2 — k-fold cross-validation splits for the DataModule (`data.num_folds`, `data.fold`).

With `num_folds: k > 1` the training and validation splits are pooled and cut into k folds (by
`split_seed`, the same on every machine and rank); fold `fold` validates and the other k-1 train.
The test split is never touched, so the runs of a search over folds are tested on the same data
and their top-k can be ensembled (`python -m <package>.ensemble topk`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import ConcatDataset, Subset

__all__ = ["check_folds", "k_fold_splits"]


def check_folds(num_folds: int, fold: int) -> None:
    """Reject a fold setting with a message naming the values and the fix."""
    if num_folds < 1:
        raise ValueError(f"data.num_folds={num_folds}: use 1 (no cross-validation) or more folds, e.g. 5.")
    if not 0 <= fold < num_folds:
        raise ValueError(
            f"data.fold={fold} is out of range for data.num_folds={num_folds}: use a fold index from 0 to {num_folds - 1}."
        )


def k_fold_splits(splits, num_folds: int, fold: int, seed: int):
    """The same `Splits` with train/val replaced by the k-fold partition of their pool (fold `fold` validates).

    Example:
        >>> from .datasets import load_digits
        >>> folds = [k_fold_splits(load_digits(8, 0.15, 0.15, 0), 5, f, 0) for f in range(5)]
        >>> sum(len(s.val) for s in folds) == len(folds[0].train) + len(folds[0].val)
        True
    """
    check_folds(num_folds, fold)
    if num_folds == 1:
        return splits
    pool = ConcatDataset([splits.train, splits.val])
    if len(pool) < num_folds:
        raise ValueError(f"data.num_folds={num_folds}: the train+val pool has only {len(pool)} samples.")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = order[fold::num_folds]
    taken = set(held_out)
    train = [i for i in order if i not in taken]
    return dataclasses.replace(splits, train=Subset(pool, train), val=Subset(pool, held_out))
