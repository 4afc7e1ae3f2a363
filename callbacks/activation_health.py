"""F8 — Activation health: dead ReLUs, saturated sigmoid/tanh, vanishing/exploding gradients, per layer.

Lecture: "Practical suggestions: use ReLU, be careful with your learning rates (dead ReLUs); never use
sigmoid (saturates, kills gradients)"; with the initialization slides (I1: all-zero init makes
every unit compute the same thing; I2: small random weights diminish the gradient signal).

Card:
    What: every `every_n_steps` steps, on that one training batch, forward hooks on every
        activation module (ReLU family, Sigmoid, Tanh) record the output's mean/std, the fraction
        of dead units (ReLU: a channel/feature that is 0 for the whole batch), the fraction of
        saturated outputs (|tanh| or |2·sigmoid-1| above `saturation`) and whether all units of
        the layer are identical (symmetry); after backward, the gradient norm of every Conv/Linear
        weight. Each sample is checked and findings are named with advice.
    When it helps: a net that does not learn (dead, saturated, zero-initialized), deep nets
        (vanishing/exploding gradients), aggressive learning rates.
    Cost: hooks exist only on sampled steps; a few reductions per layer there. With the default
        every 50 steps the overhead is a small fraction of a percent of the epoch.

Why here: Lightning's `ModelSummary`/`LearningRateMonitor` and torchmetrics see no activations;
`Trainer(track_grad_norm=...)` is gone in 2.x and `grad_norm` gives norms, not their diagnosis.

Findings (thresholds are arguments): dead fraction > `max_dead` in a layer; saturated fraction >
`max_saturated`; identical units (symmetry, e.g. all-zero init); the first layer's gradient norm
below `vanishing_ratio` times the last one's (vanishing) or any norm above `exploding_norm` or
non-finite (exploding).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import nn
from typing_extensions import override

from ..utils.plots import line_plot
from ..utils.probe import ForwardHooks
from ._diagnostics import TRY, Finding, Section, announce

__all__ = ["ActivationHealth", "activation_stats", "health_findings"]

RELUS = (nn.ReLU, nn.ReLU6)
SQUASHERS = (nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid)
ACTIVATIONS = (*RELUS, *SQUASHERS, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.GELU, nn.SiLU)


@torch.no_grad()
def activation_stats(output: torch.Tensor, module: nn.Module, saturation: float = 0.95) -> dict[str, float]:
    """Statistics of one activation output `(batch, units, ...)`: mean, std, dead (ReLU-like:
    fraction of units zero for the whole batch), saturated (sigmoid/tanh: fraction of outputs
    within 1 - saturation of the bounds) and symmetric (1.0 when every unit's output is the same).

    Example:
        >>> activation_stats(torch.zeros(8, 4), nn.ReLU())["dead"]
        1.0
        >>> activation_stats(torch.full((8, 4), 0.9999), nn.Tanh())["saturated"]
        1.0
    """
    out = output.detach().float()
    units = out.transpose(0, 1).reshape(out.shape[1], -1) if out.dim() > 1 else out.reshape(1, -1)
    stats = {"mean": out.mean().item(), "std": out.std().item() if out.numel() > 1 else 0.0, "dead": math.nan,
             "saturated": math.nan, "symmetric": 0.0}
    if isinstance(module, RELUS):
        stats["dead"] = (units.abs().amax(dim=1) <= 0).float().mean().item()
    if isinstance(module, SQUASHERS):
        centred = out * 2 - 1 if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)) else out
        stats["saturated"] = (centred.abs() >= saturation).float().mean().item()
    if units.shape[0] > 1:
        stats["symmetric"] = float((units - units[:1]).abs().max().item() <= 1e-7 * max(1.0, units.abs().max().item()))
    return stats


def health_findings(layers: dict[str, dict[str, float]], grads: dict[str, float], max_dead: float = 0.5,
                    max_saturated: float = 0.25, vanishing_ratio: float = 1e-3, exploding_norm: float = 1e3) -> list[Finding]:
    """Name the problems in one sample: `layers` name -> activation_stats, `grads` name -> weight grad norm (in order)."""
    found = []
    dead = {n: s["dead"] for n, s in layers.items() if s["dead"] > max_dead}
    if dead:
        found.append(Finding("F8", "dead ReLUs: " + ", ".join(f"{n} {v:.0%}" for n, v in dead.items()),
                             "lower the LR, check the init (He, I4), or try Leaky ReLU / PReLU", recipes=TRY["dead"]))
    saturated = {n: s["saturated"] for n, s in layers.items() if s["saturated"] > max_saturated}
    if saturated:
        found.append(Finding("F8", "saturated sigmoid/tanh: " + ", ".join(f"{n} {v:.0%}" for n, v in saturated.items()),
                             "saturation kills the gradient: use ReLU (never sigmoid), or calibrate the init (I3)",
                             recipes=TRY["saturated"]))
    symmetric = [n for n, s in layers.items() if s["symmetric"]]
    if symmetric:
        found.append(Finding("I1", "symmetric units (all units of a layer identical): " + ", ".join(symmetric),
                             "every unit computes the same gradient: use a random init (He, I4), never all-zero",
                             recipes=TRY["symmetric"]))
    norms = list(grads.values())
    if norms:
        if not all(math.isfinite(v) for v in norms) or max(norms) > exploding_norm:
            found.append(Finding("F8", f"exploding gradients (largest weight-gradient norm {max(norms):.3g})",
                                 "lower the LR, clip gradients, or add BatchNorm", recipes=TRY["exploding"]))
        elif norms[-1] > 0 and norms[0] < vanishing_ratio * norms[-1]:
            found.append(Finding("I2", f"vanishing gradients (first layer {norms[0]:.2e} vs last {norms[-1]:.2e})",
                                 "use ReLU and He init (I4) or BatchNorm; small random init diminishes the gradient signal",
                                 recipes=TRY["vanishing"]))
    return found


class ActivationHealth(Callback):
    """Sample activation and gradient health every `every_n_steps` training steps, on one batch (F8).

    Args:
        every_n_steps: sampling period (step 0 is always sampled).
        saturation: |tanh| (or |2·sigmoid-1|) at or above this counts as saturated.
        max_dead, max_saturated: fractions above which a layer is reported.
        vanishing_ratio, exploding_norm: gradient-norm thresholds.

    `self.samples` is a list of dicts {step, layers: {name: stats}, grads: {name: norm}, findings}.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[ActivationHealth(every_n_steps=100)])
    """

    def __init__(self, every_n_steps: int = 50, saturation: float = 0.95, max_dead: float = 0.5, max_saturated: float = 0.25,
                 vanishing_ratio: float = 1e-3, exploding_norm: float = 1e3) -> None:
        if every_n_steps < 1:
            raise ValueError(f"ActivationHealth(every_n_steps={every_n_steps}): use 1 or more, e.g. 50.")
        if not 0 < saturation < 1:
            raise ValueError(f"ActivationHealth(saturation={saturation}): use a level in (0, 1), e.g. 0.95.")
        for name, value in (("max_dead", max_dead), ("max_saturated", max_saturated)):
            if not 0 <= value < 1:
                raise ValueError(f"ActivationHealth({name}={value}): use a fraction in [0, 1), e.g. 0.5.")
        if not vanishing_ratio > 0 or not exploding_norm > 0:
            raise ValueError(f"ActivationHealth(vanishing_ratio={vanishing_ratio}, exploding_norm={exploding_norm}): both must be positive.")
        self.every_n_steps, self.saturation = every_n_steps, saturation
        self.limits = dict(max_dead=max_dead, max_saturated=max_saturated, vanishing_ratio=vanishing_ratio,
                           exploding_norm=exploding_norm)
        self.samples: list[dict] = []
        self._hooks: ForwardHooks[str, dict[str, float] | None] | None = None
        self._current: dict | None = None

    def _stats(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> dict[str, float] | None:
        return activation_stats(output, module, self.saturation) if isinstance(output, torch.Tensor) else None

    def _remove_hooks(self) -> list[tuple[str, dict[str, float] | None]]:
        """Remove the sampling hooks (if any); what they recorded, in call order."""
        hooks, self._hooks = self._hooks, None
        if hooks is None:
            return []
        hooks.remove()
        return hooks.records

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps or self._hooks is not None:
            return
        if self.samples and self.samples[-1]["step"] == trainer.global_step:
            return  # gradient accumulation: several batches share one step; sample the first only
        self._current = {"step": trainer.global_step, "layers": dict(), "grads": dict()}
        self._hooks = ForwardHooks(((name, module) for name, module in pl_module.named_modules()
                                    if isinstance(module, ACTIVATIONS)), self._stats)

    @override
    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._current is None:
            return
        for name, module in pl_module.named_modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and module.weight.grad is not None:
                self._current["grads"][name] = module.weight.grad.detach().norm().item()

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._current is None:
            return
        sample, self._current = self._current, None
        for name, stats in self._remove_hooks():
            if stats is None:
                continue
            previous = sample["layers"].get(name)  # a module called twice (ResNet's relu): keep the worst
            if previous is not None:
                stats = {k: max(v, previous[k]) if k in ("dead", "saturated") else v for k, v in stats.items()}
            sample["layers"][name] = stats
        sample["findings"] = health_findings(sample["layers"], sample["grads"], **self.limits)
        self.samples.append(sample)
        for finding in sample["findings"]:
            announce(trainer, f"{finding.source}_activation", finding)
        metrics = {f"diagnose/dead/{n}": s["dead"] for n, s in sample["layers"].items() if not math.isnan(s["dead"])}
        metrics |= {f"diagnose/saturated/{n}": s["saturated"] for n, s in sample["layers"].items() if not math.isnan(s["saturated"])}
        metrics |= {f"diagnose/grad_norm/{n}": v for n, v in sample["grads"].items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._remove_hooks()  # a fit stopped between the sampled batch's start and end
        self._current = None

    def findings(self) -> list[Finding]:
        if not self.samples:
            return []
        found = self.samples[-1]["findings"]
        return found or [Finding("F8", "healthy activations and gradients (last sample)", "nothing to change", healthy=True)]

    def report_section(self) -> Section:
        if not self.samples:
            return Section("Activation health (F8)", [], ["No step was sampled."])
        steps = [s["step"] for s in self.samples]
        names = list(self.samples[-1]["layers"])
        def curve(key, name):
            return steps, [s["layers"].get(name, {}).get(key, math.nan) for s in self.samples]
        images = {}
        dead = {n: curve("dead", n) for n in names if not math.isnan(self.samples[-1]["layers"][n]["dead"])}
        saturated = {n: curve("saturated", n) for n in names if not math.isnan(self.samples[-1]["layers"][n]["saturated"])}
        if dead or saturated:
            curves = {f"dead {n}": c for n, c in dead.items()}
            curves.update({f"sat {n}": c for n, c in saturated.items()})
            images["activation_health"] = line_plot(curves,
                                                    "F8 dead / saturated fraction per layer", "step", "fraction",
                                                    notes=[f.line() for f in self.findings()])
        grads = list(self.samples[-1]["grads"])
        if grads:
            images["gradient_norms"] = line_plot({n: (steps, [s["grads"].get(n, math.nan) for s in self.samples]) for n in grads},
                                                 "F8 weight-gradient norm per layer (sampled steps)", "step", "gradient norm", log_y=True)
        last = self.samples[-1]
        lines = [f"Sampled {len(self.samples)} steps (every {self.every_n_steps}); last sample, step {last['step']}:", "",
                 "| layer | mean | std | dead | saturated | symmetric |", "|---|---|---|---|---|---|"]
        for name, s in last["layers"].items():
            cells = [f"{s['mean']:.3g}", f"{s['std']:.3g}"] + ["-" if math.isnan(s[k]) else f"{s[k]:.0%}" for k in ("dead", "saturated")]
            lines.append(f"| {name} | {' | '.join(cells)} | {'yes' if s['symmetric'] else 'no'} |")
        if last["grads"]:
            lines += ["", "| layer | weight-gradient norm |", "|---|---|"] + [f"| {n} | {v:.3g} |" for n, v in last["grads"].items()]
        return Section("Activation health (F8)", self.findings(), lines, images)
