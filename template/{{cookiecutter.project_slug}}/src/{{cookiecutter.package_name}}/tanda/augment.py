"""A5 — `TandaAugment`: training augmentation by TF sequences drawn from a learned TANDA policy.

Use in a recipe (`recipes/augment/tanda.yaml`) as a `data.augment` transform. With
`policy_path: null` it draws sequences uniformly over the benign default TFs (and warns once how
to learn a policy), so the recipe runs before any policy exists.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .learn import apply_sequences, load_policy
from .policy import MeanFieldPolicy
from .tfs import BENIGN, default_tfs

__all__ = ["TandaAugment"]


class TandaAugment(nn.Module):
    """Apply a TF sequence sampled from a saved TANDA policy to each image.

    Args:
        policy_path: file written by `python -m <package>.tanda learn --out ...`; None: uniform
            sequences over `tfs` (a warning says how to learn a policy).
        tfs: TF names (see `tanda.tfs.default_tfs`) for the uniform policy; default: the benign
            ones (shifts, ±10° rotations, zooms, shears). With a policy file, its names are used.
        transforms: your own TF modules instead of the built-in ones, in the order the policy was
            learned with (for policies learned from Python with custom TFs).
        length: sequence length of the uniform policy.
        min_probability: TFs the policy gives less than this (per position, averaged) are never
            applied; they are also hidden from the A7 identity check, which sees `self.transforms`.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     augment = TandaAugment(policy_path=None, tfs=["shift_left", "zoom_in"], length=2)
        >>> augment(torch.rand(1, 16, 16)).shape
        torch.Size([1, 16, 16])
    """

    _warned = False

    def __init__(
        self,
        policy_path: str | None = None,
        tfs: list[str] | None = None,
        transforms: list[nn.Module] | None = None,
        length: int = 3,
        min_probability: float = 0.01,
    ) -> None:
        super().__init__()
        if not 0.0 <= min_probability < 1.0:
            raise ValueError(
                f"TandaAugment(min_probability={min_probability}): use a probability in [0, 1), e.g. 0.01."
            )
        if policy_path is None:
            if length < 1:
                raise ValueError(f"TandaAugment(length={length}): use a sequence length of 1 or more, e.g. 3.")
            names = list(tfs or BENIGN)
            self.policy, saved_probabilities = MeanFieldPolicy(len(names), length), None
            if not TandaAugment._warned:
                TandaAugment._warned = True
                warnings.warn(
                    f"TandaAugment(policy_path=None): uniform TF sequences (length {length}) over {len(names)} TFs; learn a "
                    "policy with `python -m <package>.tanda learn --out policies/tanda.pt` and set policy_path to it.",
                    stacklevel=2,
                )
        else:
            saved, self.policy = load_policy(policy_path)
            names, saved_probabilities = list(saved["tf_names"]), list(saved["probabilities"])
            if tfs is not None and list(tfs) != names:
                raise ValueError(
                    f"TandaAugment(tfs={tfs}): the policy in {policy_path} was learned over {names}; drop tfs."
                )
        if transforms is not None:
            if len(transforms) != len(names):
                raise ValueError(
                    f"TandaAugment(transforms=<{len(transforms)} modules>): the policy chooses among {len(names)} TFs "
                    f"({', '.join(names)}); give one module per TF, in that order."
                )
            modules = list(transforms)
        else:
            modules = list(default_tfs(names).values())
        self.tf_names, self.tfs = names, nn.ModuleList(modules)
        self.policy.requires_grad_(False).eval()
        self.min_probability = min_probability
        marginals = saved_probabilities or self.policy.marginals().tolist()
        keep = torch.tensor([p >= min_probability for p in marginals])
        if not keep.any():
            raise ValueError(f"TandaAugment(min_probability={min_probability}): that prunes every TF; lower it.")
        self.register_buffer("keep", keep, persistent=False)

    @property
    def transforms(self) -> list[nn.Module]:
        """The TFs that can be applied (what the A7 identity check inspects)."""
        return [m for m, k in zip(self.tfs, self.keep.tolist(), strict=True) if k]

    @torch.no_grad()
    def probabilities(self) -> dict[str, float]:
        """Per-TF probability at a sequence position (averaged over positions), after pruning."""
        return dict(zip(self.tf_names, self.policy.marginals(mask=self.keep).tolist(), strict=True))

    @torch.no_grad()
    def augment_batch(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each image of a batch (N, C, H, W) gets its own sampled sequence (TFs run batched)."""
        sequences, _ = self.policy.sample(len(images), generator, mask=self.keep)
        return apply_sequences(images, sequences, list(self.tfs))

    def forward(self, *inputs):
        if len(inputs) != 1 or not isinstance(inputs[0], torch.Tensor):
            raise ValueError(
                "TandaAugment takes one image tensor; samples with masks (A6) are not supported: its TFs would "
                "treat the mask as an image. Use it on datasets without masks."
            )
        image = inputs[0]
        return self.augment_batch(image.unsqueeze(0))[0] if image.ndim == 3 else self.augment_batch(image)

    def extra_repr(self) -> str:
        return f"tfs={[n for n, k in zip(self.tf_names, self.keep.tolist(), strict=True) if k]}, length={self.policy.length}"
