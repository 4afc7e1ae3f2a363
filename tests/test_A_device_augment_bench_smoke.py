"""A (speed) — the data-path benchmark's quick mode runs and writes its figures (so the script never rots).

The figures themselves are not asserted: timings on a shared machine are noise for a test; the
full run (`python benchmarks/data_path.py`) prints them side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_A_device_augment_benchmark_quick_mode(tmp_path):
    out = tmp_path / "data_path.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_path.py"), "--quick", "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["quick"] is True and len(figures["images_per_second"]) == 3
    assert all(rate > 0 for rate in figures["images_per_second"].values())
    assert set(figures["ratios"]) == {"batched / per-sample DataLoader", "batched / plain torchvision v2",
                                      "per-sample DataLoader / plain torchvision v2"}
    assert "ratio batched / per-sample DataLoader" in result.stdout
