"""A5 — TANDA's adversarial training: a TF-sequence generator against a real-vs-transformed discriminator.

The discriminator D (a small CNN) learns to tell real training images from transformed ones. The
generator is trained by REINFORCE with a moving-average baseline (TFs need not be differentiable)
on the reward

    log D(h_tau(x))  -  alpha * relu(margin - d(h_tau(x), x)) / margin

where d is the mean absolute pixel difference: the first term asks for outputs D takes for real,
the second is the paper's distance term that keeps h_tau(x) from being x itself, so the null
sequence (or TFs that undo each other) does not win. A hinge, not a raw distance, so that large
changes (an inverted image) earn nothing for being far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .policy import VARIANTS, make_policy

__all__ = ["Discriminator", "apply_sequences", "learn_policy", "load_policy", "save_policy"]

FORMAT = "tanda-policy/1"


def apply_sequences(images: torch.Tensor, sequences: torch.Tensor, tfs: Sequence[nn.Module]) -> torch.Tensor:
    """Apply sequence `sequences[i]` (TF indices, left to right) to `images[i]`; batched per TF.

    Example:
        >>> from .tfs import Invert, Rotate
        >>> out = apply_sequences(torch.zeros(2, 1, 2, 2), torch.tensor([[0, 0], [0, 1]]), [Invert(), Rotate(90)])
        >>> out.flatten(1).sum(1).tolist()
        [0.0, 4.0]
    """
    out = images.clone()
    for position in range(sequences.shape[1]):
        column = sequences[:, position]
        for index in column.unique().tolist():
            rows = (column == index).nonzero().squeeze(1)
            out[rows] = tfs[index](out[rows])
    return out


class Discriminator(nn.Module):
    """A small CNN scoring "real" (logit > 0) vs "transformed"; keeps a 4x4 map so layout counts.

    Example:
        >>> Discriminator(1)(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2])
    """

    def __init__(self, in_channels: int, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)


def learn_policy(
    images: torch.Tensor,
    tfs: dict[str, nn.Module],
    variant: str = "mean_field",
    length: int = 3,
    steps: int = 300,
    batch_size: int = 64,
    alpha: float = 1.0,
    margin: float = 0.05,
    generator_lr: float | None = None,
    discriminator_lr: float = 2e-3,
    entropy: float = 0.1,
    discriminator_width: int = 8,
    hidden: int = 32,
    seed: int = 0,
    log_every: int = 0,
) -> dict:
    """Learn a TF-sequence policy on unlabeled `images` (N, C, H, W); returns the savable dict.

    Args:
        images: unlabeled training images in [0, 1] (never validation or test images).
        tfs: name -> TF module (see `tfs.default_tfs`); any image-to-image callable module works.
        variant: `mean_field` (a categorical per position) or `lstm` (state-based).
        length: TF sequence length L.
        steps: adversarial steps, each one discriminator and one generator update.
        alpha, margin: the distance penalty `alpha * relu(margin - mean|h(x) - x|) / margin`.
        generator_lr: Adam rate of the generator (default 0.01 mean-field, 0.002 LSTM).
        entropy: weight of the entropy bonus `-entropy * log p(sequence)` added to the reward.
        discriminator_width: channels of the discriminator's first layer.

    Seeded: the same inputs and seed give the same policy on CPU. The global RNG is left untouched.

    Example:
        >>> from .tfs import default_tfs
        >>> result = learn_policy(torch.rand(32, 1, 16, 16), default_tfs(["shift_left", "invert"]), steps=2, batch_size=8)
        >>> result["tf_names"], len(result["probabilities"])
        (['shift_left', 'invert'], 2)
    """
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"learn_policy(images of shape {tuple(images.shape)}): give a batch (N >= 2, C, H, W).")
    if steps < 1 or batch_size < 2:
        raise ValueError(f"learn_policy(steps={steps}, batch_size={batch_size}): use steps >= 1 and batch_size >= 2.")
    if alpha < 0 or margin <= 0:
        raise ValueError(
            f"learn_policy(alpha={alpha}, margin={margin}): use alpha >= 0 and margin > 0, e.g. 1.0 and 0.05."
        )
    names, modules = list(tfs), list(tfs.values())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = make_policy(variant, len(modules), length, hidden)
        discriminator = Discriminator(images.shape[1], discriminator_width)
    g = torch.Generator().manual_seed(seed)
    if generator_lr is None:  # the LSTM moves (and collapses onto one mode) much faster at the same rate
        generator_lr = 0.01 if variant == "mean_field" else 0.002
    g_opt = torch.optim.Adam(policy.parameters(), lr=generator_lr)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=discriminator_lr)
    bce = nn.BCEWithLogitsLoss()
    baseline, batch_size = None, min(batch_size, len(images))
    history = []
    for step in range(steps):
        source = images[torch.randint(len(images), (batch_size,), generator=g)]
        real = images[torch.randint(len(images), (batch_size,), generator=g)]
        sequences, log_prob = policy.sample(batch_size, g)
        with torch.no_grad():
            fake = apply_sequences(source, sequences, modules)
        # Discriminator step: real training images vs this batch's transformed ones.
        d_loss = bce(discriminator(real), torch.ones(batch_size)) + bce(discriminator(fake), torch.zeros(batch_size))
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        # Generator step (REINFORCE): reward outputs D takes for real, penalize near-copies of x.
        with torch.no_grad():
            distance = (fake - source).abs().flatten(1).mean(1)
            reward = nn.functional.logsigmoid(discriminator(fake)) - alpha * torch.relu(margin - distance) / margin
            reward = reward - entropy * log_prob.detach()  # entropy bonus: a GAN's generator collapses onto one mode
            baseline = reward.mean() if baseline is None else 0.9 * baseline + 0.1 * reward.mean()
            advantage = reward - baseline
        g_loss = -(advantage * log_prob).mean()
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
        history.append(float(reward.mean()))
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1:>5}  D loss {d_loss.item():.3f}  mean reward {float(reward.mean()):.3f}", flush=True)
    probabilities = policy.marginals()
    return {
        "format": FORMAT,
        "variant": variant,
        "length": length,
        "hidden": hidden,
        "tf_names": names,
        "tf_reprs": [repr(m) for m in modules],
        "probabilities": [float(p) for p in probabilities],
        "state_dict": {k: v.detach().clone() for k, v in policy.state_dict().items()},
        "config": {
            "steps": steps,
            "batch_size": batch_size,
            "alpha": alpha,
            "margin": margin,
            "entropy": entropy,
            "discriminator_width": discriminator_width,
            "seed": seed,
            "generator_lr": generator_lr,
            "discriminator_lr": discriminator_lr,
            "image_shape": list(images.shape[1:]),
        },
        "reward_history": history,
    }


def save_policy(result: dict, path: str | Path) -> Path:
    """Save a learned policy: tensors, strings, numbers, lists and dicts only (loads weights_only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result, path)
    return path


def load_policy(path: str | Path) -> tuple[dict, nn.Module]:
    """Load a saved policy safely (`weights_only=True`); returns (file contents, policy module)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"TANDA policy {path} does not exist: learn one with `python -m <package>.tanda learn --out {path}`, "
            "or set policy_path: null for a uniform policy."
        )
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("variant") not in VARIANTS:
        raise ValueError(
            f"{path} is not a TANDA policy file ({FORMAT}); learn one with `python -m <package>.tanda learn`."
        )
    policy = make_policy(saved["variant"], len(saved["tf_names"]), saved["length"], saved.get("hidden", 32))
    policy.load_state_dict(saved["state_dict"])
    return saved, policy


def probability_table(names: Sequence[str], probabilities: Sequence[float]) -> str:
    """A printable table of TF probabilities (per position, averaged), highest first."""
    rows = sorted(zip(names, probabilities, strict=True), key=lambda row: -row[1])
    width = max(len(n) for n in names)
    uniform = 1 / len(names)
    lines = [f"{'TF'.ljust(width)}  probability  (uniform {uniform:.3f})"]
    lines += [f"{n.ljust(width)}  {p:>11.3f}  {'#' * max(0, math.ceil(40 * p))}" for n, p in rows]
    return "\n".join(lines)
