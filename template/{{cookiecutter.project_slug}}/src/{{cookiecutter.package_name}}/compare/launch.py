"""Training processes, N at a time: the launcher of `compare` and `ensemble seeds`.

Each job is one `python -m <package> ...` process (a fresh interpreter per run: no state leaks from one
training into the next, and a crash ends one run, not the comparison). With `parallel > 1` every job
gets `cpu_count / parallel` CPU threads (OMP_NUM_THREADS, read by torch at start) and, when there are
several GPUs, one of them (CUDA_VISIBLE_DEVICES, by slot, so two running jobs never share one). Written
here because Lightning launches the processes of ONE training (DDP), not a queue of independent ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Job", "job_environment", "run_jobs"]


@dataclass(frozen=True)
class Job:
    """One process: `command`, its output to `log` (None: this terminal)."""

    label: str
    command: list[str]
    log: Path | None = None


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def job_environment(slot: int, parallel: int) -> dict[str, str]:
    """The environment of the job in `slot` (0..parallel-1): its share of the CPU threads and its GPU."""
    env = dict(os.environ)
    if parallel > 1:
        threads = str(max(1, _cpu_count() // parallel))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        gpus = _visible_gpus()
        if len(gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


def _start(job: Job, env: dict[str, str]) -> subprocess.Popen:
    if job.log is None:
        return subprocess.Popen(job.command, env=env)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "w") as stream:  # the child keeps its own handle
        return subprocess.Popen(job.command, env=env, stdout=stream, stderr=subprocess.STDOUT)


def _stop(processes: Sequence[subprocess.Popen], grace: float = 30.0) -> None:
    """Ctrl-C for the jobs still running (a terminal's Ctrl-C reached them already; a `kill -INT` of
    this process did not): Lightning saves last.ckpt and exits; what ignores it is killed after `grace` s."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_jobs(jobs: Sequence[Job], parallel: int, on_finish: Callable[[Job, int], bool | None]) -> None:
    """Run `jobs` in order, `parallel` at a time. `on_finish(job, exit_code)` is called as each one
    ends; returning False starts no further job (those running finish). An exception here (Ctrl-C
    included) interrupts the running jobs, waits for them, and propagates."""
    if parallel < 1:
        raise ValueError(f"parallel={parallel}: run at least 1 job at a time.")
    pending = list(jobs)
    running: dict[int, tuple[Job, subprocess.Popen]] = {}
    accepting = True
    try:
        while running or (pending and accepting):
            while pending and accepting and len(running) < parallel:
                slot = min(set(range(parallel)) - running.keys())
                job = pending.pop(0)
                running[slot] = (job, _start(job, job_environment(slot, parallel)))
            time.sleep(0.2)
            for slot, (job, process) in list(running.items()):
                if process.poll() is not None:
                    del running[slot]
                    if on_finish(job, process.returncode) is False:
                        accepting = False
    except BaseException:
        _stop([process for _, process in running.values()])
        raise
