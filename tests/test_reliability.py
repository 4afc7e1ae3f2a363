"""Interruptions and outages, through the real CLI in subprocesses: kill -9, SIGTERM, W&B down."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import TEST_PACKAGE, offline_env, run

SHORT_EPOCHS = ["--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1"]


def fit_command(project: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", TEST_PACKAGE, "fit", f"--config={project / 'configs/default.yaml'}", *SHORT_EPOCHS, *extra]


def start_and_stop(project: Path, cwd: Path, env: dict, sig: signal.Signals) -> tuple[Path, str, int]:
    """Start a long fit, wait for its first last.ckpt, send `sig`; returns (last.ckpt, output, exit code)."""
    process = subprocess.Popen(fit_command(project, "--trainer.max_epochs=200"), cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not list(cwd.glob("runs/*/*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    time.sleep(1.0)  # let it get into a later epoch
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    (last,) = cwd.glob("runs/*/*/checkpoints/last.ckpt")
    return last, output, process.returncode


def resume(project: Path, cwd: Path, env: dict, saved_step: int) -> str:
    result = run(fit_command(project, "--ckpt_path=last", "--trainer.max_epochs=200",
                             f"--trainer.max_steps={saved_step + 4}"), cwd=cwd, env=env)
    return result.stdout + result.stderr


def test_kill_9_then_resume_continues_the_same_run(project, home, tmp_path):
    env = offline_env(home, project)
    last, _, code = start_and_stop(project, tmp_path, env, signal.SIGKILL)
    assert code == -signal.SIGKILL
    saved = torch.load(last, weights_only=True)
    run_id = last.parent.parent.name
    output = resume(project, tmp_path, env, saved["global_step"])
    assert f"Restored all states from the checkpoint at runs/tricks-check/{run_id}/checkpoints/last.ckpt" in output
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == saved["global_step"] + 4  # same step counter, 4 more steps
    assert resumed["epoch"] >= saved["epoch"]
    assert resumed["lr_schedulers"][0]["last_epoch"] >= saved["lr_schedulers"][0]["last_epoch"]
    runs = sorted(p.name for p in tmp_path.glob("runs/wandb/offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(run_id) for name in runs)  # W&B resumed the same run id


def test_sigterm_saves_last_checkpoint_first(project, home, tmp_path):
    env = offline_env(home, project)
    last, output, code = start_and_stop(project, tmp_path, env, signal.SIGTERM)
    assert "Interrupted at step" in output and "continue with --ckpt_path last" in output
    saved = torch.load(last, weights_only=True)
    interrupted_at = int(output.split("Interrupted at step ")[1].split(":")[0])
    assert saved["global_step"] == interrupted_at  # saved at the interruption, not only at the last epoch end
    resume(project, tmp_path, env, saved["global_step"])


def test_unreachable_wandb_falls_back_to_offline(project, home, tmp_path):
    env = offline_env(home, project)
    # A key, so W&B tries to go online, and a server address on loopback where nothing listens.
    env.update(WANDB_API_KEY="0" * 40, WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="5")
    result = run(fit_command(project, "--trainer.max_epochs=1"), cwd=tmp_path, env=env)
    assert "W&B offline (W&B unreachable" in result.stdout
    assert list(tmp_path.glob("runs/wandb/offline-run-*/run-*.wandb"))
    assert list(tmp_path.glob("runs/*/*/checkpoints/best.ckpt"))
