"""E5 — combining members: averaged probabilities never do worse than the members' mean NLL; logits and
vote variants; weights; stacked (vmapped) inference equals one call per member; unsafe or mismatched
checkpoints refused; the `python -m <package>.ensemble test` command over 3 checkpoints."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys

import pytest
import torch
from tiny import quiet_trainer

from cnn_tricks.utils.ensembling import combine, member_logits, nll, stack_states

from conftest import offline_env, run

TINY = {"backbone_options": {"widths": [4, 8]}}


def make_member(pkg, path, seed: int, steps: int = 3, image_size: int = 16, **hparams):
    """A real ImageClassifier checkpoint: `steps` optimizer steps on digits (seeded), saved by Lightning."""
    torch.manual_seed(seed)
    model = pkg.ImageClassifier(num_classes=10, in_channels=1, image_size=image_size, **{**TINY, **hparams})
    data = pkg.ImageDataModule("digits", image_size=image_size, batch_size=32)
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(path)
    return path


def untrained_checkpoint(pkg, path, image_size: int = 16, num_classes: int = 10):
    """A checkpoint as Lightning writes it (state_dict + hyper_parameters) of a freshly built member."""
    model = pkg.ImageClassifier(num_classes=num_classes, in_channels=1, image_size=image_size, **TINY)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def members(pkg, tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return [make_member(pkg, folder / f"seed{s}.ckpt", seed=s) for s in range(3)]


@pytest.fixture(scope="module")
def ensemble_module(pkg):
    return importlib.import_module(f"{pkg.__name__}.ensemble")


def test_E5_averaged_probabilities_never_worse_than_mean_member_nll_on_every_batch(pkg, members, ensemble_module):
    ensemble = ensemble_module.EnsembleModule([str(p) for p in members])
    data = pkg.ImageDataModule("digits", image_size=16, batch_size=16)
    data.setup("test")
    gaps = []
    for images, targets in data.test_dataloader():
        logits = ensemble.member_logits(images)
        members_nll = torch.stack([nll(m.softmax(-1), targets).mean() for m in logits])
        ensemble_nll = nll(combine(logits, "probs"), targets).mean()
        assert ensemble_nll <= members_nll.mean() + 1e-6
        gaps.append((members_nll.mean() - ensemble_nll).item())
    assert len(gaps) == 17 and max(gaps) > 1e-4  # strictly better somewhere: the members do differ
    # The same inequality for arbitrary logits and weights (Jensen), many random batches.
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        logits, targets = torch.randn(5, 8, 4, generator=g) * 3, torch.randint(0, 4, (8,), generator=g)
        w = torch.rand(5, generator=g)
        mean_nll = (w / w.sum() * torch.stack([nll(m.softmax(-1), targets).mean() for m in logits])).sum()
        assert nll(combine(logits, "probs", w), targets).mean() <= mean_nll + 1e-6


def test_E5_logits_and_vote_variants_and_weights():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 4, generator=g)
    assert torch.allclose(combine(logits, "logits"), logits.mean(0).softmax(-1))
    assert torch.allclose(combine(logits, "probs"), logits.softmax(-1).mean(0))
    votes = combine(logits, "vote")
    for sample in range(6):
        counts = torch.bincount(logits[:, sample].argmax(-1), minlength=4).float()
        assert torch.allclose(votes[sample], counts / 3)
    # A member with all the weight decides alone; weights must fit the members.
    assert torch.allclose(combine(logits, "probs", [0, 1, 0]), logits[1].softmax(-1))
    assert torch.equal(combine(logits, "vote", [0, 0, 2]).argmax(-1), logits[2].argmax(-1))
    with pytest.raises(ValueError, match="one weight per member"):
        combine(logits, "probs", [1, 1])
    with pytest.raises(ValueError, match="combine='mean'"):
        combine(logits, "mean")


def test_E5_stacked_members_run_as_one_vmapped_call_and_match_one_call_each(members, ensemble_module):
    ensemble = ensemble_module.EnsembleModule([str(p) for p in members], combine="logits")
    assert ensemble._homogeneous  # same architecture: eligible for the vmapped path (taken on GPUs)
    x = torch.randn(5, 1, 16, 16)
    one_by_one = torch.stack([m(x) for m in ensemble.members])
    assert torch.allclose(ensemble.member_logits(x), one_by_one, atol=1e-5)
    assert not torch.allclose(one_by_one[0], one_by_one[1])
    states = [m.state_dict() for m in ensemble.members]
    vmapped = member_logits(ensemble.members[0], states, x, stack_states(states))  # the GPU path, run here on CPU
    assert torch.allclose(vmapped, one_by_one, atol=1e-5)
    assert torch.allclose(member_logits(ensemble.members[0], states, x), one_by_one, atol=1e-5)  # functional loop
    assert stack_states([states[0], {k: v.flatten()[:1] for k, v in states[1].items()}]) is None


def test_E5_mismatched_members_are_rejected(pkg, members, ensemble_module, tmp_path):
    five = untrained_checkpoint(pkg, tmp_path / "five.ckpt", num_classes=5)
    with pytest.raises(ValueError, match=r"members disagree on num_classes .*seed0.ckpt .*: 10.*five.ckpt .*: 5"):
        ensemble_module.EnsembleModule([str(members[0]), str(five)])
    small = untrained_checkpoint(pkg, tmp_path / "small.ckpt", image_size=8)
    with pytest.raises(ValueError, match="members disagree on image_size"):
        ensemble_module.EnsembleModule([str(members[0]), str(small)])
    with pytest.raises(ValueError, match="combine='median'"):
        ensemble_module.EnsembleModule([str(members[0])], combine="median")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        ensemble_module.EnsembleModule([str(tmp_path / "missing.ckpt")])


class Payload:
    """Stands for any object a pickle could smuggle in (with weights_only=False its code would run)."""

    def __reduce__(self):
        return (print, ("this would have run",))


def test_E5_checkpoints_load_weights_only(members, ensemble_module, tmp_path):
    checkpoint = torch.load(members[0], weights_only=True)
    checkpoint["hyper_parameters"]["backbone_options"] = {"widths": [4, 8], "extra": Payload()}
    torch.save(checkpoint, tmp_path / "unsafe.ckpt")
    with pytest.raises(ValueError, match="refused by weights-only loading"):
        ensemble_module.EnsembleModule([str(tmp_path / "unsafe.ckpt")])
    (tmp_path / "junk.ckpt").write_bytes(pickle.dumps([1, 2]) + b"junk")
    with pytest.raises(ValueError, match="junk.ckpt"):
        ensemble_module.load_checkpoint(tmp_path / "junk.ckpt")


def test_E5_predict_and_test_with_a_trainer(pkg, members, ensemble_module):
    ensemble = ensemble_module.EnsembleModule([str(p) for p in members], combine="vote", weights=[1, 1, 2])
    data = pkg.ImageDataModule("digits", image_size=16, batch_size=128)
    trainer = quiet_trainer()
    probs = torch.cat(trainer.predict(ensemble, datamodule=data))
    assert probs.shape == (270, 10) and torch.allclose(probs.sum(-1), torch.ones(270))
    (metrics,) = trainer.test(ensemble, datamodule=data, verbose=False)
    assert {"test/acc", "test/nll", "test/ece", "test/member0_acc", "test/member2_nll"} <= set(metrics)
    # ECE of the combined probabilities over the whole test split, as torchmetrics' functional form computes it.
    from torchmetrics.functional.classification import multiclass_calibration_error

    labels = torch.cat([batch[1] for batch in data.test_dataloader()])
    expected = multiclass_calibration_error(probs, labels, num_classes=10, n_bins=15, norm="l1")
    assert abs(metrics["test/ece"] - float(expected)) < 1e-5


def test_E5_command_tests_an_ensemble_of_three_checkpoints_and_rejects_a_mismatch(pkg, project, members, home, tmp_path):
    env = offline_env(home, project)
    command = [sys.executable, "-m", f"{pkg.__name__}.ensemble", "test", *map(str, members), "--accelerator=cpu",
               "--data", "dataset=digits", "--data", "num_workers=0"]
    out = run(command, cwd=project, env=env, timeout=300).stdout
    assert "Ensemble of 3 (probs)" in out
    accs = [float(a) for a in out.split("test/acc of the members: ")[1].split("\n")[0].split(", ")]
    ensemble_acc = float(out.split("test/acc of the ensemble: ")[1].split()[0])
    assert len(accs) == 3 and 0.0 <= ensemble_acc <= 1.0
    print(f"members {accs} -> ensemble {ensemble_acc}")
    # The same through the project's CLI: `lightning test --config ... --ensemble a b c`.
    via_cli = run([sys.executable, "-m", pkg.__name__, "test", f"--config={project / 'configs/default.yaml'}",
                   "--ensemble", *map(str, members), "--trainer.accelerator=cpu", "--data.num_workers=0"],
                  cwd=project, env=env, timeout=300).stdout
    assert "Ensemble of 3 (probs)" in via_cli
    assert float(via_cli.split("test/acc of the ensemble: ")[1].split()[0]) == ensemble_acc
    # predict --ensemble writes the combined probabilities; --ensemble with fit is refused before anything runs.
    run([sys.executable, "-m", pkg.__name__, "predict", f"--config={project / 'configs/default.yaml'}", "--ensemble",
         *map(str, members), "--trainer.accelerator=cpu", "--data.num_workers=0", f"--ensemble_output={tmp_path / 'p.pt'}"],
        cwd=project, env=env, timeout=300)
    saved = torch.load(tmp_path / "p.pt")
    assert saved["probs"].shape[1] == 10 and len(saved["members"]) == 3
    refused = subprocess.run([sys.executable, "-m", pkg.__name__, "fit", f"--config={project / 'configs/default.yaml'}",
                              "--ensemble", str(members[0])], cwd=project, env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "--ensemble evaluates checkpoints: use it with test or predict" in refused.stderr
    five = untrained_checkpoint(pkg, tmp_path / "five.ckpt", num_classes=5)
    ensemble = importlib.import_module(f"{pkg.__name__}.ensemble")
    with pytest.raises(SystemExit, match="members disagree on num_classes"):  # the same command, in-process
        ensemble.main(["test", str(members[0]), str(five), "--accelerator=cpu"])
