"""The comparison's answer: per arm and metric the mean with its 95 % CI, the paired difference to the
baseline with its CI, the verdict and how many seeds a paired t-test would need; as a terminal table,
`results.csv`, `compare.png` (error bars) and `report.md`, and a W&B table when W&B is the logger.
"""

from __future__ import annotations

import csv
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.plots import figure, to_image
from .runs import BASELINE, Comparison, Run
from .stats import Interval, Verdict, mean_interval, paired_difference, seeds_needed, verdict


@dataclass(frozen=True)
class Metric:
    key: str  # in each run's result JSON and in results.csv
    label: str
    higher_is_better: bool
    digits: int


METRICS = (
    Metric("test_acc", "test accuracy", True, 4),
    Metric("test_nll", "test NLL", False, 4),
    Metric("test_ece", "test ECE", False, 4),
    Metric("train_seconds", "training time (s)", False, 1),
)
CSV_COLUMNS = ("arm", "metric", "mean", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high", "verdict")


@dataclass(frozen=True)
class Row:
    arm: str
    metric: Metric
    values: tuple[float, ...]
    interval: Interval
    difference: Interval | None = None  # None for the baseline
    verdict: Verdict | None = None
    seeds_needed: int | None = None


def summarize(comparison: Comparison, results: dict[Run, dict[str, Any]]) -> list[Row]:
    """One row per arm and metric, over the units (seeds, folds) every arm has finished."""
    complete = [u for u in comparison.units if all(Run(a.name, u, comparison.by) in results for a in comparison.arms)]
    rows = []
    for metric in METRICS:
        baseline = [float(results[Run(BASELINE, u, comparison.by)][metric.key]) for u in complete]
        for arm in comparison.arms:
            values = [float(results[Run(arm.name, u, comparison.by)][metric.key]) for u in complete]
            if arm.name == BASELINE:
                rows.append(Row(arm.name, metric, tuple(values), mean_interval(values)))
                continue
            difference = paired_difference(values, baseline)
            rows.append(Row(arm.name, metric, tuple(values), mean_interval(values), difference,
                            verdict(difference, metric.higher_is_better), seeds_needed(difference.mean, difference.sd)))
    return rows


def running_means(comparison: Comparison, results: dict[Run, dict[str, Any]]) -> str:
    """The means so far of every arm (all its finished runs), one line each."""
    lines = []
    for arm in comparison.arms:
        done = [r for run, r in results.items() if run.arm == arm.name]
        means = "  ".join(f"{m.key} {sum(float(r[m.key]) for r in done) / len(done):.{m.digits}f}" for m in METRICS) if done else "-"
        lines.append(f"    {arm.name:<16} {len(done)}/{len(comparison.units)} runs  {means}")
    return "\n".join(lines)


def _number(value: float, digits: int, sign: bool = False) -> str:
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _cells(row: Row) -> list[str]:
    d = row.metric.digits
    mean = f"{_number(row.interval.mean, d)} [{_number(row.interval.low, d)}, {_number(row.interval.high, d)}]"
    if row.difference is None:
        return [row.arm, row.metric.key, mean, "", "", ""]
    diff = (f"{_number(row.difference.mean, d, True)} [{_number(row.difference.low, d, True)}, "
            f"{_number(row.difference.high, d, True)}]")
    needed = "—" if row.seeds_needed is None else str(row.seeds_needed)
    return [row.arm, row.metric.key, mean, diff, row.verdict or "", needed]


def _header(by: str) -> list[str]:
    return ["arm", "metric", "mean [95% CI]", "vs baseline, paired [95% CI]", "verdict", f"{by}s for 80% power"]


def text_table(rows: Sequence[Row], by: str) -> str:
    table = [_header(by), *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table)


def markdown_table(rows: Sequence[Row], by: str) -> str:
    lines = ["| " + " | ".join(_header(by)) + " |", "|" + "---|" * len(_header(by))]
    return "\n".join(lines + ["| " + " | ".join(_cells(row)) + " |" for row in rows])


def write_csv(rows: Sequence[Row], path: Path) -> None:
    """`results.csv`: one row per arm and metric; the difference columns are empty for the baseline."""
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            diff = row.difference
            writer.writerow([row.arm, row.metric.key, repr(row.interval.mean), repr(row.interval.low), repr(row.interval.high),
                             *((repr(diff.mean), repr(diff.low), repr(diff.high), row.verdict) if diff else ("", "", "", ""))])


VERDICT_COLORS = {"better": "tab:green", "worse": "tab:red", "no detectable difference": "tab:gray"}


def draw_figure(rows: Sequence[Row], comparison: Comparison, path: Path) -> None:
    """Top: each arm's mean with its 95 % CI and the individual runs; bottom (with arms besides the
    baseline): the paired difference to the baseline with its CI, coloured by verdict, 0 dashed."""
    arms = [a.name for a in comparison.arms]
    with_differences = len(arms) > 1
    fig, axes = figure((300 * len(METRICS), 560 if with_differences else 300), nrows=2 if with_differences else 1,
                       ncols=len(METRICS))
    for column, metric in enumerate(METRICS):
        mine = {row.arm: row for row in rows if row.metric == metric}
        ax = axes[0, column]
        for x, arm in enumerate(arms):
            row = mine[arm]
            ax.errorbar([x], [row.interval.mean], yerr=[[row.interval.mean - row.interval.low], [row.interval.high - row.interval.mean]],
                        fmt="o", color="tab:blue", capsize=5)
            ax.plot([x] * len(row.values), row.values, ".", color="black", alpha=0.4)
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.5, len(arms) - 0.5)
        ax.set_title(f"{metric.label} ({'higher' if metric.higher_is_better else 'lower'} is better)", fontsize=10)
        if not with_differences:
            continue
        ax = axes[1, column]
        others = arms[1:]
        for x, arm in enumerate(others):
            diff = mine[arm].difference
            ax.errorbar([x], [diff.mean], yerr=[[diff.mean - diff.low], [diff.high - diff.mean]], fmt="o", capsize=5,
                        color=VERDICT_COLORS[mine[arm].verdict])
        ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(others)), others, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.5, len(others) - 0.5)
        ax.set_title(f"difference to {BASELINE} (paired)", fontsize=10)
    fig.suptitle(f"{comparison.group}: {len(comparison.units)} {comparison.by}s, 95 % confidence intervals", fontsize=11)
    to_image(fig).save(path)


def evaluated_lines(comparison: Comparison, results: dict[Run, dict[str, Any]]) -> str:
    """One line per arm: what its test metrics measured (the runs' `evaluated`), and when that is not the best
    checkpoint alone (an ensemble, SWA), the best checkpoint's own means next to it."""
    tested = [m for m in METRICS if m.key.startswith("test_")]  # what the child also measured on the best checkpoint
    lines = []
    for arm in comparison.arms:
        done = [r for run, r in results.items() if run.arm == arm.name]
        if not done:
            continue
        what = ", ".join(dict.fromkeys(str(r.get("evaluated", "best checkpoint")) for r in done))
        singles = [r for r in done if all(f"single_{m.key}" in r for m in tested)]
        if singles and any(r.get(m.key) != r.get(f"single_{m.key}") for r in singles for m in tested):
            means = ", ".join(f"{m.key} {sum(float(r[f'single_{m.key}']) for r in singles) / len(singles):.{m.digits}f}"
                              for m in tested)
            what += f" (the best checkpoint alone: {means})"
        lines.append(f"- `{arm.name}`: {what}")
    return "\n".join(lines)


def write_markdown(rows: Sequence[Row], comparison: Comparison, results: dict[Run, dict[str, Any]], path: Path,
                   command_line: str) -> None:
    units = ", ".join(str(u) for u in comparison.units)
    arms = "\n".join(f"- `{a.name}`: the baseline" + (f" + {', '.join(f'`{r}`' for r in a.recipes)}" if a.recipes else "")
                     for a in comparison.arms)
    split = (f"seeds {units} (`--seed_everything`)" if comparison.by == "seed" else
             f"the {len(comparison.units)} folds of a stratified k-fold split (`--data.num_folds/--data.fold`), seed {comparison.seed}")
    runs = "\n".join(f"- `{run.name}`: {results[run].get('run_folder')} (log: `logs/{run.name}.log`)"
                     for run in comparison.runs() if run in results)
    path.write_text(f"""# Comparison {comparison.group}

`{command_line}`

Every arm trained on {split}, tested on the same test split (what each arm tested: below the table).
Baseline arguments: `{shlex.join(comparison.baseline_args)}`

{arms}

{markdown_table(rows, comparison.by)}

What the test metrics measure, per arm:
{evaluated_lines(comparison, results)}

Mean over the {comparison.by}s with its 95 % Student-t confidence interval. The difference to the baseline is paired
(same {comparison.by}) with its 95 % CI: `better`/`worse` when that CI excludes 0 (accuracy: higher is better; NLL,
ECE and time: lower is better), else `no detectable difference`, which is not evidence of no effect: the last column is
the number of {comparison.by}s a paired t-test (alpha 0.05, power 80 %) would need to detect the observed difference
given its observed spread (— when the difference is exactly 0). ECE: 15 equal-width confidence bins.

![comparison](compare.png)

## Runs

{runs}
""")


def log_to_wandb(rows: Sequence[Row], comparison: Comparison, settings: dict[str, Any], image: Path) -> None:
    """A run `compare-<id>` in the runs' W&B group with the table and the figure (offline without a login)."""
    from ..loggers import AutoWandbLogger

    logger = AutoWandbLogger(project=settings.get("project"), entity=settings.get("entity"), save_dir=settings.get("save_dir"),
                             name=comparison.group, group=comparison.group, job_type="compare")
    data = [[row.arm, row.metric.key, row.interval.mean, row.interval.low, row.interval.high,
             *((row.difference.mean, row.difference.low, row.difference.high, row.verdict) if row.difference else (None,) * 4)]
            for row in rows]
    logger.log_table("compare/results", columns=list(CSV_COLUMNS), data=data)
    logger.log_image("compare/figure", [str(image)])
    logger.experiment.finish()


def report(comparison: Comparison, results: dict[Run, dict[str, Any]], command_line: str) -> Path:
    """Write results.csv, compare.png and report.md in the comparison's folder, print the table, log to
    W&B when the runs did; returns report.md's path."""
    rows = summarize(comparison, results)
    folder = comparison.folder
    write_csv(rows, folder / "results.csv")
    draw_figure(rows, comparison, folder / "compare.png")
    write_markdown(rows, comparison, results, folder / "report.md", command_line)
    wandb = next((r["wandb"] for r in results.values() if r.get("wandb")), None)
    if wandb is not None:
        log_to_wandb(rows, comparison, wandb, folder / "compare.png")
    print(text_table(rows, comparison.by), flush=True)
    return folder / "report.md"
