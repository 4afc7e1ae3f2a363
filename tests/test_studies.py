"""The six studies in their reduced form (`benchmarks/studies.py --reduced`), so they never rot.

One subprocess runs all six into a temporary folder (a project generated from the template, trained
in-process there: never the root `callbacks` package in this process); each test then checks one
study's outputs: a PNG figure drawn with matplotlib, and a Markdown page with the claim, the setup, every
expected table row and a verdict.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, offline_env, run

ROWS = {
    "init": ["zero (I1)", "small random (I2)", "calibrated (I3)", "He (I4)"],
    "activations": ["sigmoid (F1)", "tanh (F2)", "ReLU (F3)", "Leaky ReLU (F4)", "PReLU (F5)", "RReLU (F6)", "Maxout (F7)"],
    "regularization": ["| none |", "L2 (R1) | ", "| 1.62 |", "L2 + L1 (R3)", "| 1.60 |", "max-norm (R4)", "| 1.35 |",
                       "dropout + L2 (R5)", "| 1.25 |", "dropout + max-norm (R5)", "| 1.05 |"],
    "lr": ["| 10 |", "| 1 |", "| 0.1 |", "| 0.01 |", "| 0.0001 |"],
    "augmentation": ["`augment/flip`", "`augment/color-jitter`", "`augment/pad-crop`", "`augment/random-resized-crop`",
                     "`augment/stretch-shear`", "`augment/lens-distortion`", "`augment/random-combination`",
                     "`augment/randaugment`", "`augment/tanda`", "probe: horizontal flip", "probe: rotate 180"],
    "ensembles": ["single, constant LR", "snapshot ensemble", "checkpoint ensemble", "seeds", "EMA of the weights (E4)",
                  "SWA (E4)"],
}


@pytest.fixture(scope="module")
def reduced(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("studies")
    home = tmp_path_factory.mktemp("home")
    start = time.perf_counter()
    result = run([sys.executable, str(REPO / "benchmarks" / "studies.py"), "--reduced", "--out", str(out)],
                 cwd=home, env=offline_env(home), timeout=300)
    print(result.stdout[-2000:])
    return out, time.perf_counter() - start


@pytest.mark.parametrize("name", list(ROWS))
def test_study_reduced_writes_figure_and_table(reduced, name):
    out, _ = reduced
    image = Image.open(out / f"{name}.png")
    assert image.width >= 400 and image.height >= 300, image.size
    # A drawn figure, not a blank canvas: lines in more than two colours.
    assert len(image.convert("RGB").getcolors(maxcolors=100_000) or []) > 3
    text = (out / f"{name}.md").read_text()
    for section in ("**Claim (the lecture).**", "**Setup.**", f"![{name}]({name}.png)", "**Did it hold here?**",
                    "**Reduced run**"):
        assert section in text, f"{name}.md lacks {section!r}"
    assert re.search(r"\*\*Did it hold here\?\*\* \*\*(Yes|Partly|No)", text), text[-600:]
    for row in ROWS[name]:
        assert row in text, f"{name}.md lacks the row {row!r}"


def test_studies_index_and_runtime(reduced):
    out, seconds = reduced
    index = (out / "README.md").read_text()
    for name in ROWS:
        assert f"[{name}.md]({name}.md)" in index
    print(f"six reduced studies: {seconds:.1f} s (generation and start-up included)")  # a figure, not a bound: CPUs differ
