"""E3 — snapshot ensemble: M cosine cycles, a snapshot at each cycle's LR minimum, the ensemble evaluated;
resuming continues the schedule; under 2-process CPU DDP every snapshot is written once."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback
from pytorch_lightning.loggers import CSVLogger
from tiny import TinyClassifier, loader, quiet_trainer, tiny_convnet

from cnn_tricks.callbacks.snapshot_ensemble import SnapshotEnsemble, cycle_boundaries, snapshot_lr


def tiny_net(scheduler: bool = False) -> TinyClassifier:
    """A one-conv BatchNorm net, SGD at 0.2 with momentum; with `scheduler`, a StepLR the callback must refuse."""
    step_lr = partial(torch.optim.lr_scheduler.StepLR, step_size=1) if scheduler else None
    return TinyClassifier(tiny_convnet(4, batch_norm=True), lr=0.2, momentum=0.9, scheduler=step_lr)


class LRProbe(Callback):
    """Records (global step before the optimizer step, LR used) for every batch; can stop after an epoch."""

    def __init__(self, stop_after_epoch: int | None = None) -> None:
        self.lrs: dict[int, float] = {}
        self.stop_after_epoch = stop_after_epoch

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs[trainer.global_step] = optimizer.param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.stop_after_epoch:
            trainer.should_stop = True


def loaders():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    x[:, :, :2] += y.view(-1, 1, 1, 1).float()  # a learnable signal
    return loader(x[:64], y[:64], batch_size=16), loader(x[64:], y[64:], batch_size=16)


def make_trainer(tmp_path, callbacks, max_epochs=6):
    return quiet_trainer(callbacks=callbacks, max_epochs=max_epochs, logger=CSVLogger(tmp_path, name="run"), log_every_n_steps=1)


def test_E3_three_cycles_three_snapshots_each_at_its_cycle_lr_minimum(tmp_path):
    torch.manual_seed(0)
    snapshot, probe = SnapshotEnsemble(cycles=3), LRProbe()
    trainer = make_trainer(tmp_path, [snapshot, probe])
    trainer.fit(tiny_net(), *loaders())
    assert snapshot.boundaries == [0, 8, 16, 24]  # 6 epochs x 4 batches
    files = sorted((tmp_path / "run" / "version_0" / "checkpoints" / "snapshots").glob("*.ckpt"))
    assert [f.name for f in files] == ["snapshot-1.ckpt", "snapshot-2.ckpt", "snapshot-3.ckpt"]
    for cycle, (start, end) in enumerate(zip(snapshot.boundaries[:-1], snapshot.boundaries[1:], strict=True), 1):
        cycle_lrs = [probe.lrs[s] for s in range(start, end)]
        assert cycle_lrs[0] == pytest.approx(0.2)  # a restart at the base LR
        assert cycle_lrs[-1] == min(cycle_lrs) < 0.2 * 0.05  # the snapshot's step has the cycle's smallest LR
        saved = torch.load(files[cycle - 1], weights_only=True)
        assert saved["global_step"] == end
    # Ensemble and per-member metrics, logged side by side.
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    logged = {k: float(v) for row in rows for k, v in row.items() if v not in ("", None)}
    for key in ("val/ensemble_acc", "val/ensemble_nll", "val/snapshot1_acc", "val/snapshot2_nll", "val/snapshot3_acc"):
        assert key in logged
    member_nll = [snapshot.results[f"val/snapshot{c}_nll"] for c in (1, 2, 3)]
    assert snapshot.results["val/ensemble_nll"] <= sum(member_nll) / 3 + 1e-6
    assert len({round(v, 6) for v in member_nll}) == 3  # three different models, not one saved thrice


def test_E3_resuming_mid_cycle_continues_the_same_schedule(tmp_path):
    torch.manual_seed(0)
    full = LRProbe()
    make_trainer(tmp_path / "full", [SnapshotEnsemble(cycles=3), full]).fit(tiny_net(), *loaders())

    torch.manual_seed(0)
    first = LRProbe(stop_after_epoch=2)  # stops at step 12, in the middle of cycle 2 (steps 8..15)
    trainer = make_trainer(tmp_path / "cut", [SnapshotEnsemble(cycles=3), first])
    trainer.fit(tiny_net(), *loaders())
    trainer.save_checkpoint(tmp_path / "cut.ckpt")
    assert max(first.lrs) == 11

    second, snapshot = LRProbe(), SnapshotEnsemble(cycles=3)
    make_trainer(tmp_path / "cut", [snapshot, second]).fit(tiny_net(), *loaders(), ckpt_path=tmp_path / "cut.ckpt")
    assert min(second.lrs) == 12
    assert [second.lrs[s] for s in range(12, 24)] == pytest.approx([full.lrs[s] for s in range(12, 24)], abs=1e-12)
    assert sorted(snapshot.snapshots) == [1, 2, 3]  # the first snapshot, from before the cut, is in the ensemble
    assert "val/ensemble_acc" in snapshot.results


def test_E3_cosine_schedule_formula():
    bounds = cycle_boundaries(10, 3)
    assert bounds == [0, 3, 6, 10]
    assert snapshot_lr(0, bounds, 1.0) == 1.0 and snapshot_lr(3, bounds, 1.0) == 1.0
    assert snapshot_lr(8, bounds, 1.0, 0.1) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 2 / 4)))


def test_E3_another_lr_scheduler_is_refused_at_fit_start(tmp_path):
    trainer = make_trainer(tmp_path, [SnapshotEnsemble(cycles=2)])
    with pytest.raises(ValueError, match=r"SnapshotEnsemble owns the LR schedule.*StepLR.*lr_scheduler: null"):
        trainer.fit(tiny_net(scheduler=True), *loaders())
    assert not list(tmp_path.rglob("*.ckpt"))


def test_E3_arguments_are_validated():
    with pytest.raises(ValueError, match="cycles=0"):
        SnapshotEnsemble(cycles=0)
    with pytest.raises(ValueError, match="ensemble_size=4"):
        SnapshotEnsemble(cycles=3, ensemble_size=4)
    with pytest.raises(ValueError, match="lr_max=0.01"):
        SnapshotEnsemble(lr_max=0.01, lr_min=0.1)


DDP_SCRIPT = '''
import json, os, sys
import torch
import conftest  # the cnn_tricks package the tests import the repository's folders as
from pytorch_lightning.loggers import CSVLogger
from cnn_tricks.callbacks.snapshot_ensemble import SnapshotEnsemble
from test_E3_snapshot_ensemble import loaders, tiny_net
from tiny import quiet_trainer

if __name__ == "__main__":
    out = sys.argv[1]
    torch.manual_seed(0)
    snapshot = SnapshotEnsemble(cycles=3)
    trainer = quiet_trainer(callbacks=[snapshot], strategy="ddp", devices=2, max_epochs=3, logger=CSVLogger(out, name="run"))
    io = trainer.strategy.checkpoint_io
    save = io.save_checkpoint

    def logged_save(checkpoint, path, storage_options=None):  # every real write, with the rank that made it
        with open(os.path.join(out, "writes.txt"), "a") as log:
            log.write(f"{trainer.global_rank} {path}\\n")
        return save(checkpoint, path, storage_options)

    io.save_checkpoint = logged_save
    trainer.fit(tiny_net(), *loaders())
    with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump({"boundaries": snapshot.boundaries, "results": snapshot.results}, f)
'''


def test_E3_under_two_process_ddp_each_snapshot_is_written_once_and_ranks_agree(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "ddp_snapshot.py").write_text(DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MASTER_", "LOCAL_RANK"))}
    env["PYTHONPATH"] = f"{repo}{os.pathsep}{repo / 'tests'}"
    done = subprocess.run([sys.executable, str(tmp_path / "ddp_snapshot.py"), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    writes = (tmp_path / "writes.txt").read_text().split("\n")[:-1]
    assert sorted(Path(w.split()[1]).name for w in writes) == ["snapshot-1.ckpt", "snapshot-2.ckpt", "snapshot-3.ckpt"]
    assert {w.split()[0] for w in writes} == {"0"}  # written by rank 0 only, each exactly once
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["boundaries"] == ranks[1]["boundaries"] == [0, 2, 4, 6]  # 3 epochs x 2 batches per rank
    assert ranks[0]["results"] == ranks[1]["results"] and "val/ensemble_acc" in ranks[0]["results"]
