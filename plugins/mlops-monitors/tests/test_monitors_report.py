"""The HTML report: self-contained, and its histograms render in a real headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from monitors_fixtures import chromium_screenshot

from mlops_monitors.drift import DriftConfig, analyze
from mlops_monitors.profile import build_profile
from mlops_monitors.report import CUR_COLOR, REF_COLOR, render_report

ARTIFACTS = Path(__file__).parent / "artifacts"


def _report():
    rng = np.random.default_rng(12)
    ref = {"age": rng.normal(40, 10, 20_000), "income": rng.lognormal(10, 0.5, 20_000),
           "plan": rng.choice(["free", "pro", "team"], 20_000, p=[0.6, 0.3, 0.1])}
    cur = {"age": rng.normal(40, 10, 4000), "income": rng.lognormal(10.6, 0.5, 4000),
           "plan": rng.choice(["free", "pro", "team"], 4000, p=[0.2, 0.3, 0.5])}
    profile = build_profile(lambda: [ref], model="churn", version=5, source="from train.csv")
    return profile, analyze(profile, [cur], DriftConfig())


def test_report_is_one_self_contained_file():
    profile, report = _report()
    html = render_report(profile, report)
    assert report.drifted == ["income", "plan"]
    assert html.count("<svg") == 3 and "<script" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)  # no external assets
    assert "models:/churn/5" in html and "2 drifted" in html
    assert html.count(f'fill="{REF_COLOR}"') >= 20 and html.count(f'fill="{CUR_COLOR}"') >= 20


@pytest.mark.slow
def test_report_renders_in_headless_chromium_with_visible_histograms(tmp_path):
    from PIL import Image

    profile, report = _report()
    page = tmp_path / "report.html"
    page.write_text(render_report(profile, report), encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    png = chromium_screenshot(page, ARTIFACTS / "drift-report.png", tmp_path / "chromium-profile")
    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 2000)
    pixels = np.asarray(image).reshape(-1, 3)
    colors = {tuple(c) for c in np.unique(pixels[:: 7], axis=0)}
    assert len(colors) > 50, "screenshot looks blank"

    def share(hex_color: str) -> float:
        rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        return float((np.abs(pixels.astype(int) - rgb).sum(axis=1) <= 6).mean())

    # both series' bars are painted: a visible area of each colour (each is a few % of the page)
    assert share(REF_COLOR) > 0.005 and share(CUR_COLOR) > 0.005
