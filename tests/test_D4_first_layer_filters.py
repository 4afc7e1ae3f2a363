"""D4 — first-layer filters: a grid image per epoch in the run folder; the score ranks noise below smooth filters."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from pytorch_lightning import seed_everything
from pytorch_lightning.loggers import CSVLogger
from tiny import TinyClassifier, loader, quiet_trainer
from torch import nn

from cnn_tricks.callbacks.first_layer_filters import FirstLayerFilters, filter_grid, high_frequency_ratio


def gabor_bank(count: int = 16, size: int = 7) -> torch.Tensor:
    """Smooth, Gabor-like filters: oriented cosines under a Gaussian (what trained first layers look like)."""
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    filters = [torch.exp(-(x**2 + y**2) / 0.5) * torch.cos(3 * (x * math.cos(t) + y * math.sin(t)))
               for t in torch.linspace(0, math.pi, count).tolist()]
    return torch.stack(filters).unsqueeze(1)


def test_D4_score_ranks_noise_filters_noisier_than_smooth_ones():
    noise = torch.randn(16, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    noise3 = torch.randn(16, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    axis = torch.linspace(-1, 1, 3)
    y, x = torch.meshgrid(axis, axis, indexing="ij")  # 3x3 oriented edges, the smoothest a 3x3 filter can be
    edges = torch.stack([x * math.cos(t) + y * math.sin(t) for t in torch.linspace(0, math.pi, 16).tolist()])
    smooth, smooth3 = gabor_bank(), edges.unsqueeze(1).expand(16, 3, 3, 3)
    scores = {name: high_frequency_ratio(w) for name, w in
              (("noise 7x7", noise), ("gabor 7x7", smooth), ("noise 3x3 rgb", noise3), ("edges 3x3", smooth3))}
    print({k: round(v, 3) for k, v in scores.items()})
    assert scores["noise 7x7"] > 0.8 > 0.5 > scores["gabor 7x7"]
    assert scores["noise 3x3 rgb"] > 0.8 > scores["edges 3x3"]
    # mixing noise into smooth filters raises the score monotonically
    mixed = [high_frequency_ratio(smooth + a * noise * smooth.std()) for a in (0.0, 0.3, 1.0, 3.0)]
    assert mixed == sorted(mixed)
    assert filter_grid(noise3).shape[0] == 3 and filter_grid(noise).shape[0] == 3


def first_layer_net(first: torch.Tensor) -> TinyClassifier:
    """A conv starting from the filters `first` (7x7 or 3x3), then ReLU, global pooling and a linear head; tiny LR."""
    conv = nn.Conv2d(1, first.shape[0], first.shape[-1], padding=first.shape[-1] // 2)
    head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(first.shape[0], 10))
    with torch.no_grad():
        conv.weight.copy_(first)
    return TinyClassifier({"conv": conv, "head": head}, lr=1e-4)


def fit_filters(first: torch.Tensor, folder, epochs: int = 2, **options) -> FirstLayerFilters:
    seed_everything(0, verbose=False)
    filters = FirstLayerFilters(**options)
    data = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    quiet_trainer(callbacks=[filters], max_epochs=epochs, logger=CSVLogger(folder)).fit(first_layer_net(first), loader(*data))
    return filters


def test_D4_a_grid_per_epoch_in_the_run_folder_and_the_verdict(tmp_path):
    noisy = fit_filters(torch.randn(16, 1, 7, 7, generator=torch.Generator().manual_seed(0)) * 0.1, tmp_path / "noisy")
    smooth = fit_filters(gabor_bank() * 0.1, tmp_path / "smooth")
    run = tmp_path / "noisy" / "lightning_logs" / "version_0"  # the CSV logger's run folder (save_dir/name/version)
    assert noisy.files == [run / "filters" / "epoch_000.png", run / "filters" / "epoch_001.png"]
    for path in noisy.files:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:  # 16 filters of 7x7 taps, 8 pixels per tap: a 4x4 grid of 56-pixel panels
            assert image.width >= 4 * 56 and image.height >= 4 * 56, image.size
    assert [epoch for epoch, _ in noisy.scores] == [0, 1] and len(noisy.grids) == 2
    (noisy_finding,), (smooth_finding,) = noisy.findings(), smooth.findings()
    print(noisy_finding.line(), "|", smooth_finding.line())
    assert "regularization may not be strong enough" in noisy_finding.advice and not noisy_finding.healthy
    assert smooth_finding.healthy and noisy.scores[-1][1] > smooth.scores[-1][1]


def test_D4_arguments_are_validated():
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        FirstLayerFilters(every_n_epochs=0)
    with pytest.raises(ValueError, match="at least 2x2"):
        high_frequency_ratio(torch.randn(4, 3, 1, 1))


def test_D4_abstains_on_3x3_filters_where_a_textbook_detector_scores_like_noise(tmp_path):
    """3x3 taps have too few spatial frequencies: a bank of Laplacian (centre-surround) detectors, which a
    healthy first layer may well learn, scores above white noise. The verdict abstains and says why."""
    laplacian = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
    bank = torch.stack([laplacian * s for s in torch.linspace(0.5, 1.5, 8).tolist()]).unsqueeze(1) * 0.1
    assert high_frequency_ratio(bank) > high_frequency_ratio(torch.randn(64, 1, 3, 3)) > 0.8
    judged = fit_filters(bank, tmp_path / "judged", epochs=1, min_kernel=3)  # judging 3x3 would call them noisy
    (finding,) = judged.findings()
    assert not finding.healthy and "noisy" in finding.verdict
    abstained = fit_filters(bank, tmp_path / "default", epochs=1)
    (finding,) = abstained.findings()
    print(finding.line())
    assert finding.healthy and "no verdict on 3x3" in finding.verdict and "nothing to fix" in finding.advice
    assert abstained.files and abstained.scores  # still drawn and scored
    with pytest.raises(ValueError, match="min_kernel=1"):
        FirstLayerFilters(min_kernel=1)
