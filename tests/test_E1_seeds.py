"""E1 — same model, different initializations: `python -m <package>.ensemble seeds` trains one config with
N seeds (here 2 at once, as parallel jobs) and ensembles their best checkpoints."""

from __future__ import annotations

import sys

import torch
import yaml

from conftest import offline_env, run


def test_E1_seeds_command_trains_each_seed_once_and_ensembles_them(pkg, project, home, tmp_path):
    root = tmp_path / "runs"
    fit_args = ["--config", str(project / "configs" / "default.yaml"), "--config", str(project / "recipes" / "logger" / "csv.yaml"),
                f"--trainer.logger.init_args.save_dir={root}", "--data.dataset=digits", "--data.image_size=16",
                "--data.num_workers=0", "--model.backbone_options={widths: [4, 8]}", "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    command = [sys.executable, "-m", f"{pkg.__name__}.ensemble", "seeds", "--seeds", "3", "7", "--jobs", "2",
               "--root", str(root), "--accelerator=cpu", "--data", "num_workers=0", "--", *fit_args]
    out = run(command, cwd=tmp_path, env=offline_env(home, project), timeout=600).stdout
    best = sorted(root.glob("**/checkpoints/best.ckpt"))
    assert len(best) == 2  # one run per seed
    seeds = sorted(yaml.safe_load((p.parent.parent / "config.yaml").read_text())["seed_everything"] for p in best)
    assert seeds == [3, 7]
    first, second = (torch.load(p, weights_only=True)["state_dict"] for p in best)
    assert not torch.equal(first["backbone.0.weight"], second["backbone.0.weight"])  # different initializations
    assert sorted((root / "seeds").glob("seed-*.log")) == [root / "seeds" / "seed-3.log", root / "seeds" / "seed-7.log"]
    assert "Ensemble of 2 (probs)" in out and "test/acc of the ensemble" in out
