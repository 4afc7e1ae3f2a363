"""Interruptions and outages, through the real CLI in subprocesses: kill -9, SIGTERM, W&B down."""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


def test_sigterm_saves_last_checkpoint_first(project, home, tmp_path):
    env = offline_env(home, project)
    last, output, code = start_and_stop(project, tmp_path, env, signal.SIGTERM)
    assert "Interrupted at step" in output and "continue with --ckpt_path last" in output
    saved = torch.load(last, weights_only=True)
    interrupted_at = int(output.split("Interrupted at step ")[1].split(":")[0])
    assert saved["global_step"] == interrupted_at  # saved at the interruption, not only at the last epoch end
    resume(project, tmp_path, env, saved["global_step"])


def history(pkg, run_file: Path) -> list[dict]:
    """The history rows ({metric: value}) of an offline W&B run file."""
    loggers = importlib.import_module(f"{pkg.__name__}.loggers")
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in loggers.read_offline_run(run_file) if record.WhichOneof("record_type") == "history"]


def logged_metrics(pkg, cwd: Path) -> list[tuple[str, int]]:
    """(metric, step) of every history row of the run's offline `.wandb` file."""
    (run_file,) = cwd.glob("runs/wandb/offline-run-*/run-*.wandb")
    return sorted((key, int(row.get("_step", -1))) for row in history(pkg, run_file) for key in row if not key.startswith("_"))


def test_unreachable_wandb_falls_back_to_offline_and_keeps_every_metric(pkg, project, home, tmp_path):
    outage, normal = tmp_path / "outage", tmp_path / "normal"
    outage.mkdir(), normal.mkdir()
    env = offline_env(home, project)
    run(fit_command(project, "--trainer.max_epochs=2"), cwd=normal, env=env)
    # A key, so W&B tries to go online, and a server address on loopback where nothing listens.
    env.update(WANDB_API_KEY="0" * 40, WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="5")
    result = run(fit_command(project, "--trainer.max_epochs=2"), cwd=outage, env=env)
    assert "W&B offline (W&B unreachable" in result.stderr  # an info line of the rank-zero logger
    assert list(outage.glob("runs/*/*/checkpoints/best.ckpt"))
    logged = logged_metrics(pkg, outage)
    assert {"train/loss_step", "train/acc", "val/acc", "val/loss"} <= {key for key, _ in logged}
    assert logged == logged_metrics(pkg, normal)  # the same metrics at the same steps as a run without the outage


# -- SIGKILL at three chosen points, then resume: the same run as one that was never interrupted -----
KILL_AT = '''
import os
import signal

from fsspec.implementations.local import LocalFileOpener
from pytorch_lightning import Callback


def die(where):
    print(f"SIGKILL {where}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(Callback):
    """SIGKILLs this process (on rank `rank` only, if given) at one point of epoch `epoch`: mid-epoch,
    during validation, or while a checkpoint's bytes are being written (half of them are on disk)."""

    def __init__(self, point: str, epoch: int = 2, rank: int | None = None):
        self.point, self.epoch, self.rank = point, epoch, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if self.point == "mid-epoch" and trainer.current_epoch == self.epoch and batch_idx == 1:
            die(f"after batch {batch_idx} of epoch {trainer.current_epoch}")

    def on_validation_batch_end(self, trainer, *args, **kwargs):
        if self.point == "validation" and trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            die(f"during validation of epoch {trainer.current_epoch}")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.point == "checkpoint-save" and trainer.current_epoch == self.epoch:
            write = LocalFileOpener.write

            def write_half_then_die(opener, data):
                write(opener, data[: len(data) // 2])
                opener.flush()
                die(f"with {len(data) // 2} of {len(data)} bytes of a checkpoint written")

            LocalFileOpener.write = write_half_then_die
'''
def env_with_kill_at(project: Path, home: Path, folder: Path) -> dict:
    """The offline environment, with KillAt importable as `kill_at.KillAt`."""
    (folder / "kill_at.py").write_text(KILL_AT)
    env = offline_env(home, project)
    env["PYTHONPATH"] += f":{folder}"
    return env


DETERMINISTIC = ["--trainer.max_epochs=4", "--trainer.deterministic=true"]
# The default config, and one whose state lives in more places: snapshot cycles (the LR), EMA weights, ZCA statistics.
RECIPE_SETS = {"default": [], "snapshot+ema+zca": ["ensemble/snapshot", "ensemble/ema", "preprocess/zca-whitening"]}


def recipe_args(project: Path, recipes: str) -> list[str]:
    return [*DETERMINISTIC, *(f"--config={project / 'recipes' / (name + '.yaml')}" for name in RECIPE_SETS[recipes])]


def last_logged(pkg, cwd: Path, key: str) -> float:
    """The last value of `key` in the newest offline W&B run file (a resumed run writes a second one)."""
    newest = max(cwd.glob("runs/wandb/offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)
    return [row[key] for row in history(pkg, newest) if key in row][-1]


def final_state(pkg, cwd: Path) -> dict:
    """What a finished run ends with: step, epoch, final val/acc and val/loss as logged, LR, every
    tensor of the checkpoint."""
    (last,) = cwd.glob("runs/*/*/checkpoints/last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    return {"global_step": checkpoint["global_step"], "epoch": checkpoint["epoch"],
            "val_acc": last_logged(pkg, cwd, "val/acc"), "val_loss": last_logged(pkg, cwd, "val/loss"),
            "lr": checkpoint["optimizer_states"][0]["param_groups"][0]["lr"],
            "weights": checkpoint["state_dict"],  # the model, EMA-averaged where EMA runs
            # the pre-processing statistics (P1-P4) the datamodule measured on the training split
            "buffers": {k: v for k, v in checkpoint["ImageDataModule"]["preprocess_state"].items() if torch.is_tensor(v)}}


@pytest.fixture(scope="module")
def uninterrupted(pkg, project, tmp_path_factory):
    """The final state of a run that was never interrupted, per recipe set (computed once)."""
    cache = {}

    def final(recipes: str) -> dict:
        if recipes not in cache:
            cwd = tmp_path_factory.mktemp("uninterrupted")
            home = cwd / "home"
            home.mkdir()
            run(fit_command(project, *recipe_args(project, recipes)), cwd=cwd, env=offline_env(home, project))
            cache[recipes] = final_state(pkg, cwd)
        return cache[recipes]

    return final


@pytest.mark.parametrize(("point", "recipes"), [("mid-epoch", "default"), ("validation", "default"),
                                                ("checkpoint-save", "default"), ("mid-epoch", "snapshot+ema+zca")])
def test_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(pkg, project, home, tmp_path, uninterrupted, point, recipes):
    env = env_with_kill_at(project, home, tmp_path)
    killer = json.dumps({"class_path": "kill_at.KillAt", "init_args": {"point": point}})
    args = recipe_args(project, recipes)
    killed = subprocess.run(fit_command(project, *args, f"--trainer.callbacks+={killer}"), cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL and "SIGKILL " in killed.stdout, killed.stdout[-3000:] + killed.stderr[-3000:]
    for checkpoint in tmp_path.glob("runs/*/*/checkpoints/**/*.ckpt"):  # nothing half-written where we look
        torch.load(checkpoint, weights_only=True)
    (last,) = tmp_path.glob("runs/*/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 8  # epoch 2 was lost: resuming must redo it
    resuming = run(fit_command(project, *args, "--ckpt_path=last"), cwd=tmp_path, env=env)
    output = resuming.stdout + resuming.stderr
    run_id = last.parent.parent.name
    assert f"Restored all states from the checkpoint at runs/tricks-check/{run_id}/checkpoints/last.ckpt" in output
    runs = sorted(p.name for p in tmp_path.glob("runs/wandb/offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(run_id) for name in runs)  # W&B resumed the same run id
    resumed, reference = final_state(pkg, tmp_path), uninterrupted(recipes)
    print(point, recipes, {k: v for k, v in resumed.items() if k not in ("weights", "buffers")})
    for key in ("global_step", "epoch", "lr"):
        assert resumed[key] == reference[key], key
    assert abs(resumed["val_acc"] - reference["val_acc"]) < 1e-6
    assert abs(resumed["val_loss"] - reference["val_loss"]) < 1e-5
    for part in ("weights", "buffers"):
        assert resumed[part].keys() == reference[part].keys()
        drift = max([(resumed[part][k].float() - v.float()).abs().max().item() for k, v in reference[part].items()] or [0.0])
        assert drift < 1e-5, f"{part} differ by {drift} after resuming"


# -- bad input through the real command: one message, no traceback, nothing written ------------------
@pytest.mark.parametrize(("extra", "message"), [
    (["--data.batch_size=0"], "error: data.batch_size=0: use a positive batch size such as 64."),
    (["--data.dataset=imagefolder", "--data.root=photos"], "error: data.root='photos': folder"),
    # A callback's data check (TTA's A7 rule) runs before the logger or anything else starts.
    (["--config=RECIPES/evaluate/tta.yaml", "--trainer.callbacks.horizontal_flip=true"],
     "error: TestTimeAugmentation changes what digits images show (A7)"),
])
def test_bad_value_prints_one_message_and_no_traceback(project, home, tmp_path, extra, message):
    extra = [arg.replace("RECIPES", str(project / "recipes")) for arg in extra]
    result = subprocess.run(fit_command(project, *extra), cwd=tmp_path, env=offline_env(home, project),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert not (tmp_path / "runs").exists()


# -- a DDP worker dies: rank 0 ends with one message, quickly, checkpoints intact ----------------------
def test_ddp_worker_that_dies_ends_the_job_with_a_message_and_intact_checkpoints(project, home, tmp_path):
    env = env_with_kill_at(project, home, tmp_path)
    killer = json.dumps({"class_path": "kill_at.KillAt", "init_args": {"point": "mid-epoch", "epoch": 1, "rank": 1}})
    # The default config (W&B logger) with the DDP recipe on 2 CPU processes.
    command = fit_command(project, f"--config={project / 'recipes/trainer/ddp.yaml'}", "--trainer.accelerator=cpu",
                          "--trainer.devices=2", "--trainer.max_epochs=3", f"--trainer.callbacks+={killer}")
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # no hang
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: a DDP worker stopped" in result.stderr and "--ckpt_path last" in result.stderr
    assert "[rank0]: Traceback" not in result.stderr  # rank 0 prints the message, not a traceback
    (last,) = tmp_path.glob("runs/*/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 4  # epoch 0, written before the worker died
    torch.load(last.with_name("best.ckpt"), weights_only=True)


def test_fast_dev_run_writes_no_checkpoint(pkg, tmp_path):
    """A wiring check leaves nothing for a later `--ckpt_path last` to pick up (Lightning 2.6 wrote last.ckpt)."""
    from pytorch_lightning import Trainer

    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=16)
    data = pkg.ImageDataModule("digits", image_size=16, batch_size=16)
    checkpoint = importlib.import_module(f"{pkg.__name__}.reliability").SafeCheckpoint(
        dirpath=tmp_path / "checkpoints", monitor="val/acc", mode="max", filename="best", save_last=True)
    trainer = Trainer(fast_dev_run=True, callbacks=[checkpoint], accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 1 and not list(tmp_path.rglob("*.ckpt"))
