"""E2 — k-fold cross-validation splits for the DataModule (`data.num_folds`, `data.fold`).

With `num_folds: k > 1` the training and validation splits are pooled and cut into k folds,
stratified by class (scikit-learn's `StratifiedKFold`, shuffled by `split_seed`: the same on every
machine and rank; each class's count differs by at most one between folds); fold `fold` validates
and the other k-1 train.
The test split is never touched, so the runs of a search over folds are tested on the same data
and their top-k can be ensembled (`python -m <package>.ensemble topk`).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from torch.utils.data import ConcatDataset, Subset

from .datasets import labels_of

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
    from sklearn.model_selection import StratifiedKFold

    pool = ConcatDataset([splits.train, splits.val])
    if len(pool) < num_folds:
        raise ValueError(f"data.num_folds={num_folds}: the train+val pool has only {len(pool)} samples.")
    labels = labels_of(pool).numpy()
    counts = np.bincount(labels)
    if counts.max() < num_folds:  # sklearn's own refusal, with the fix named
        raise ValueError(
            f"data.num_folds={num_folds}: every class has fewer samples than folds in the train+val pool (the "
            f"largest has {counts.max()}); use fewer folds."
        )
    folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    train, held_out = next(itertools.islice(folds, fold, None))
    return dataclasses.replace(splits, train=Subset(pool, train.tolist()), val=Subset(pool, held_out.tolist()))
