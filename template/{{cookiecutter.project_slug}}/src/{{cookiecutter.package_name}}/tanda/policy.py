"""A5 — TANDA's generators: distributions over TF sequences of length L (the paper's two variants).

* `MeanFieldPolicy`: an independent categorical per position (L x K logits).
* `LSTMPolicy`: a state-based model; each position's choice depends on the ones before it.

Both give `sample(n) -> (sequences (n, L), log_prob (n,))`, differentiable in `log_prob`, for
REINFORCE; `mask` excludes TFs (pruned ones) at every position.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LSTMPolicy", "MeanFieldPolicy", "make_policy"]

VARIANTS = ("mean_field", "lstm")


def _masked(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return logits if mask is None else logits.masked_fill(~mask, float("-inf"))


class MeanFieldPolicy(nn.Module):
    """Independent categorical distributions, one per sequence position, starting uniform.

    Example:
        >>> policy = MeanFieldPolicy(num_tfs=4, length=2)
        >>> sequences, log_prob = policy.sample(3, torch.Generator().manual_seed(0))
        >>> tuple(sequences.shape), policy.marginals().tolist()
        ((3, 2), [0.25, 0.25, 0.25, 0.25])
    """

    def __init__(self, num_tfs: int, length: int) -> None:
        super().__init__()
        self.num_tfs, self.length = num_tfs, length
        self.logits = nn.Parameter(torch.zeros(length, num_tfs))

    def sample(self, n: int, generator: torch.Generator | None = None, mask: torch.Tensor | None = None):
        log_probs = torch.log_softmax(_masked(self.logits, mask), dim=-1)  # (L, K)
        sequences = torch.multinomial(log_probs.detach().exp(), n, replacement=True, generator=generator).T  # (n, L)
        log_prob = log_probs.gather(1, sequences.T).sum(0)
        return sequences, log_prob

    @torch.no_grad()
    def marginals(self, mask: torch.Tensor | None = None, **_) -> torch.Tensor:
        """Probability of each TF at a position, averaged over positions (exact)."""
        return torch.softmax(_masked(self.logits, mask), dim=-1).mean(0)


class LSTMPolicy(nn.Module):
    """An LSTM over the sequence: the previous TF (or a start token) in, the next TF's logits out.

    Example:
        >>> policy = LSTMPolicy(num_tfs=4, length=3, hidden=8)
        >>> sequences, log_prob = policy.sample(5, torch.Generator().manual_seed(0))
        >>> tuple(sequences.shape), tuple(log_prob.shape)
        ((5, 3), (5,))
    """

    def __init__(self, num_tfs: int, length: int, hidden: int = 32) -> None:
        super().__init__()
        self.num_tfs, self.length, self.hidden = num_tfs, length, hidden
        self.embed = nn.Embedding(num_tfs + 1, hidden)  # index num_tfs = start token
        self.cell = nn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(hidden, num_tfs)
        nn.init.zeros_(self.head.weight)  # starts uniform, like the mean-field policy
        nn.init.zeros_(self.head.bias)

    def sample(self, n: int, generator: torch.Generator | None = None, mask: torch.Tensor | None = None):
        device = self.head.weight.device
        token = torch.full((n,), self.num_tfs, dtype=torch.long, device=device)
        state = None
        chosen, log_prob = [], torch.zeros(n, device=device)
        for _ in range(self.length):
            state = self.cell(self.embed(token), state)
            log_probs = torch.log_softmax(_masked(self.head(state[0]), mask), dim=-1)
            token = torch.multinomial(log_probs.detach().exp(), 1, generator=generator).squeeze(1)
            log_prob = log_prob + log_probs.gather(1, token[:, None]).squeeze(1)
            chosen.append(token)
        return torch.stack(chosen, 1), log_prob

    @torch.no_grad()
    def marginals(self, mask: torch.Tensor | None = None, samples: int = 8192) -> torch.Tensor:
        """Frequency of each TF over positions, from `samples` sequences drawn with a fixed seed."""
        sequences, _ = self.sample(samples, torch.Generator(device=self.head.weight.device).manual_seed(0), mask)
        return torch.bincount(sequences.flatten(), minlength=self.num_tfs).float() / sequences.numel()


def make_policy(variant: str, num_tfs: int, length: int, hidden: int = 32) -> nn.Module:
    """`mean_field` or `lstm`, validated."""
    if variant not in VARIANTS:
        raise ValueError(f"TANDA variant={variant!r}: choose one of {', '.join(VARIANTS)}.")
    if num_tfs < 2:
        raise ValueError(f"TANDA num_tfs={num_tfs}: give at least 2 TFs to choose between.")
    if length < 1:
        raise ValueError(f"TANDA length={length}: use a sequence length of 1 or more, e.g. 3.")
    return MeanFieldPolicy(num_tfs, length) if variant == "mean_field" else LSTMPolicy(num_tfs, length, hidden)
