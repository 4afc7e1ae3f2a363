"""The runs of a comparison: what each one trains, where its result and log go, which are finished,
and launching the others with progress.

A comparison lives in `<root>/compare-<id>/`, `id` a short hash of the arms, their seeds or folds and
the baseline's arguments, so the same command finds the same folder: `runs/<name>.json` is the result
of a finished run (written only at its end), `logs/<name>.log` its output. Running the command again
skips the runs that have a result: after Ctrl-C or a kill, it continues where it stopped (a run caught
mid-way starts again from scratch, so every result comes from one uninterrupted training, the same
as without the interruption).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .launch import Job, run_jobs

PACKAGE = (__package__ or __name__.rpartition(".")[0]).rpartition(".")[0]  # the project package, also under `python -m`
BASELINE = "baseline"


@dataclass(frozen=True)
class Arm:
    """A training recipe under test: the baseline's arguments plus `recipes` (one `--config` each)."""

    name: str
    recipes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Run:
    """One training of one arm: on seed `unit`, or on fold `unit` of the k-fold split."""

    arm: str
    unit: int
    by: Literal["seed", "fold"]

    @property
    def name(self) -> str:
        return f"{self.arm}-{self.by}{self.unit}"


@dataclass(frozen=True)
class Comparison:
    """Every arm trained on the same `units`: seeds (`by="seed"`) or the folds 0..k-1 of a k-fold
    split with the fixed seed `seed` (`by="fold"`), all tested on the same test split."""

    arms: tuple[Arm, ...]
    by: Literal["seed", "fold"]
    units: tuple[int, ...]
    baseline_args: tuple[str, ...]
    root: Path
    seed: int = 0

    @property
    def id(self) -> str:
        key = {"arms": [[a.name, *a.recipes] for a in self.arms], "by": self.by, "units": list(self.units),
               "seed": self.seed if self.by == "fold" else None, "baseline": list(self.baseline_args)}
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def group(self) -> str:
        return f"compare-{self.id}"

    @property
    def folder(self) -> Path:
        return self.root / self.group

    def runs(self) -> list[Run]:
        """Seed by seed (fold by fold), every arm: an interrupted comparison has whole pairs."""
        return [Run(arm.name, unit, self.by) for unit in self.units for arm in self.arms]

    def result_path(self, run: Run) -> Path:
        return self.folder / "runs" / f"{run.name}.json"

    def log_path(self, run: Run) -> Path:
        return self.folder / "logs" / f"{run.name}.log"

    def fit_args(self, run: Run) -> list[str]:
        arm = next(a for a in self.arms if a.name == run.arm)
        args = [*self.baseline_args, *(f"--config={recipe}" for recipe in arm.recipes)]
        if self.by == "seed":
            return [*args, f"--seed_everything={run.unit}"]
        return [*args, f"--seed_everything={self.seed}", f"--data.num_folds={len(self.units)}", f"--data.fold={run.unit}"]

    def command(self, run: Run, python: str) -> list[str]:
        return [python, "-m", f"{PACKAGE}.compare.child", f"--result={self.result_path(run)}", f"--name={run.name}",
                f"--group={self.group}", f"--root_dir={self.folder / 'work' / run.name}", "--", *self.fit_args(run)]

    def finished(self) -> dict[Run, dict[str, Any]]:
        """The results of the runs that finished (in this or an earlier execution)."""
        found = {}
        for run in self.runs():
            path = self.result_path(run)
            if path.is_file():
                found[run] = json.loads(path.read_text())
        return found

    def write_manifest(self, command_line: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = {"command": command_line, "arms": {a.name: list(a.recipes) for a in self.arms}, "by": self.by,
                    "units": list(self.units), "baseline": list(self.baseline_args)}
        (self.folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def execute(comparison: Comparison, python: str, jobs: int,
            progress: Callable[[dict[Run, dict[str, Any]]], str]) -> dict[Run, dict[str, Any]]:
    """Train the runs without a result, `jobs` at a time; after each, print `[done/total]`, the ETA and
    `progress(results so far)`. Returns every result; SystemExit when a run fails or on Ctrl-C
    (the finished runs stay for the next execution)."""
    runs = comparison.runs()
    results = comparison.finished()
    todo = [run for run in runs if run not in results]
    arms = len(comparison.arms)
    print(f"{comparison.group}: {len(runs)} runs ({arms} arm{'s' * (arms > 1)} x {len(comparison.units)} "
          f"{comparison.by}s) in {comparison.folder}"
          + (f"; {len(results)} finished earlier, {len(todo)} to go" if results else ""), flush=True)
    by_name = {run.name: run for run in todo}
    failures: list[str] = []
    started = time.monotonic()
    trained = 0

    def on_finish(job: Job, code: int) -> bool:
        nonlocal trained
        run = by_name[job.label]
        path = comparison.result_path(run)
        if code != 0 or not path.is_file():
            failures.append(f"{run.name} failed (exit code {code}); its log {job.log} ends with:\n{_tail(job.log)}")
            print(f"[{len(results)}/{len(runs)}] {run.name} FAILED (exit code {code}): no new run starts", flush=True)
            return False
        results[run] = json.loads(path.read_text())
        trained += 1
        elapsed = time.monotonic() - started
        left = len(runs) - len(results)
        eta = f", about {_duration(elapsed / trained * left)} left" if left else ""
        print(f"[{len(results)}/{len(runs)}] {run.name} done ({_duration(elapsed)} so far{eta})", flush=True)
        print(progress(results), flush=True)
        return True

    queue = [Job(run.name, comparison.command(run, python), comparison.log_path(run)) for run in todo]
    if queue:
        print(f"Training {len(queue)} runs, {jobs} at a time; their logs: {comparison.folder / 'logs'}", flush=True)
    try:
        run_jobs(queue, jobs, on_finish)
    except KeyboardInterrupt:  # counted on disk: a run may have finished as Ctrl-C came
        raise SystemExit(f"Interrupted: {len(comparison.finished())}/{len(runs)} runs finished, kept in "
                         f"{comparison.folder / 'runs'}. Run the same command again to continue.") from None
    if failures:
        raise SystemExit("\n".join(failures) + f"\n{len(results)}/{len(runs)} runs finished and are kept: fix the cause "
                         "and run the same command again to continue.")
    return results
