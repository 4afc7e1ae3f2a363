"""A5 — TANDA: a learned TF-sequence policy down-weights out-of-distribution transforms."""

from __future__ import annotations

import importlib
import sys
import time
import warnings

import pytest
import torch
from torch import nn

from conftest import offline_env, run

BENIGN = ["shift_left", "shift_right", "rotate_+10", "rotate_-10", "zoom_out"]


@pytest.fixture(scope="module")
def tanda(pkg):
    return importlib.import_module(f"{pkg.__name__}.tanda")


@pytest.fixture(scope="module")
def digits(pkg):
    """The digits training split at 16x16 (no validation/test images)."""
    datasets = importlib.import_module(f"{pkg.__name__}.datasets")
    train = datasets.load_digits(16, 0.15, 0.15, 0).train
    return torch.stack([train[i][0] for i in range(len(train))])


@pytest.fixture(scope="module")
def learned(tanda, digits):
    """Both generator variants, learned with colour inversion among benign TFs (seeded)."""
    tfs = tanda.default_tfs([*BENIGN, "invert"])
    results = {}
    for variant in ("mean_field", "lstm"):
        start = time.perf_counter()
        results[variant] = tanda.learn_policy(digits, tfs, variant=variant, length=2, steps=120, batch_size=48, seed=0)
        rounded = {
            n: round(p, 3) for n, p in zip(results[variant]["tf_names"], results[variant]["probabilities"], strict=True)
        }
        print(f"{variant}: {rounded} in {time.perf_counter() - start:.1f} s")
    return results


@pytest.mark.parametrize("variant", ["mean_field", "lstm"])
def test_A5_learned_policy_downweights_out_of_distribution_tf(learned, variant):
    probabilities = dict(zip(learned[variant]["tf_names"], learned[variant]["probabilities"], strict=True))
    benign = [probabilities[name] for name in BENIGN]
    uniform = 1 / len(probabilities)  # what the untrained policy (and a random sequence) gives every TF
    assert probabilities["invert"] < uniform / 3, probabilities
    assert probabilities["invert"] < 0.25 * (sum(benign) / len(benign)), probabilities
    assert sum(p > probabilities["invert"] for p in benign) == len(benign), probabilities


def test_A5_learning_is_seeded(tanda, digits):
    tfs = tanda.default_tfs(["shift_left", "invert"])
    first, second = (tanda.learn_policy(digits[:200], tfs, steps=5, batch_size=16, seed=3) for _ in range(2))
    assert first["probabilities"] == second["probabilities"]
    assert torch.equal(first["state_dict"]["logits"], second["state_dict"]["logits"])


def test_A5_distance_penalty_keeps_the_null_transform_from_winning(tanda, digits):
    """Without the penalty the identity TF fools the discriminator best; with it, it loses."""
    tfs = {"identity": nn.Identity(), **tanda.default_tfs(["shift_left", "shift_right", "invert"])}
    p_identity = {}
    for alpha in (0.0, 1.0):
        result = tanda.learn_policy(digits, tfs, length=1, steps=100, batch_size=32, alpha=alpha, seed=0)
        p_identity[alpha] = dict(zip(result["tf_names"], result["probabilities"], strict=True))
    assert max(p_identity[0.0], key=p_identity[0.0].get) == "identity", p_identity
    assert p_identity[1.0]["identity"] < 0.5 * p_identity[0.0]["identity"], p_identity


@pytest.mark.parametrize("variant", ["mean_field", "lstm"])
def test_A5_saved_policy_loads_weights_only_and_reproduces_probabilities(tanda, learned, variant, tmp_path):
    path = tanda.save_policy(learned[variant], tmp_path / "policy.pt")
    saved = torch.load(path, weights_only=True)  # tensors, strings, numbers, lists and dicts only
    assert saved["tf_names"] == [*BENIGN, "invert"]
    augment = tanda.TandaAugment(policy_path=str(path), min_probability=0.0)
    assert list(augment.probabilities().values()) == pytest.approx(learned[variant]["probabilities"], abs=1e-6)
    # The transform samples sequences with those probabilities.
    sequences, _ = augment.policy.sample(4000, torch.Generator().manual_seed(1))
    freq = torch.bincount(sequences.flatten(), minlength=len(BENIGN) + 1).float() / sequences.numel()
    assert freq.tolist() == pytest.approx(learned[variant]["probabilities"], abs=0.03)
    image = torch.rand(1, 16, 16)
    assert augment(image).shape == image.shape


def test_A5_pruned_and_unpruned_tfs_meet_the_identity_check(pkg, tanda, learned, tmp_path):
    identity_changing = importlib.import_module(f"{pkg.__name__}.transforms.identity_check").identity_changing
    rules = importlib.import_module(f"{pkg.__name__}.datasets").DATASETS["digits"].identity_changing
    path = tanda.save_policy(learned["mean_field"], tmp_path / "policy.pt")
    pruned = tanda.TandaAugment(policy_path=str(path), min_probability=0.05)
    assert "invert" not in [n for n, k in zip(pruned.tf_names, pruned.keep.tolist(), strict=True) if k]
    assert pruned.probabilities()["invert"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        upside_down = tanda.TandaAugment(policy_path=None, tfs=["shift_left", "rotate_180"])
        benign = tanda.TandaAugment(policy_path=None)
    assert any("180" in reason for reason in identity_changing([upside_down], rules))  # A7 sees inside
    assert identity_changing([benign], rules) == []
    with pytest.raises(FileNotFoundError, match="tanda learn"):
        tanda.TandaAugment(policy_path=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="min_probability=1.5"):
        tanda.TandaAugment(min_probability=1.5)


def test_A5_policy_learned_by_command_drives_training_in_a_fresh_process(
    pkg, project, home, tmp_path, capsys, monkeypatch
):
    """`tanda learn` saves a policy; a new process trains with it through the recipe (fast_dev_run)."""
    monkeypatch.chdir(project)  # the command reads the training split as the project would
    policy = tmp_path / "policy.pt"
    command = importlib.import_module(f"{pkg.__name__}.tanda.__main__")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the command's --threads must not outlive the test
    command.main(
        [
            "learn",
            "--data",
            "image_size=16",
            "--steps",
            "20",
            "--tfs",
            "shift_left,shift_right,rotate_+10,invert",
            "--out",
            str(policy),
        ]
    )
    assert "invert" in capsys.readouterr().out and policy.is_file()
    recipe = tmp_path / "tanda-learned.yaml"
    recipe.write_text(
        (project / "recipes/augment/tanda.yaml").read_text().replace("policy_path: null", f"policy_path: {policy}")
    )
    fit = run(
        [
            sys.executable,
            "-m",
            "tricks_check",
            "fit",
            "--config",
            "configs/default.yaml",
            "--config",
            str(recipe),
            "--data.image_size=16",
            "--trainer.fast_dev_run=true",
        ],
        cwd=project,
        env=offline_env(home, project),
    )
    assert "uniform TF sequences" not in fit.stderr  # the saved policy was used, not the fallback
