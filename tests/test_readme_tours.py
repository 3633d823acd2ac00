"""The README's tours run verbatim on a fresh folder, so the first thing a newcomer tries works.

Blocks are picked by the HTML comments in front of them: ``<!-- tour: python -->``,
``<!-- tour: shell -->`` and ``<!-- tour-file: NAME -->`` (a file the shell tour uses).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- (tour|tour-file): (\S+) -->\n```\w*\n(.*?)\n```", re.S)


def tour_blocks() -> dict[tuple[str, str], str]:
    return {(kind, name): code for kind, name, code in BLOCK.findall(README.read_text())}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _cleanup(tmp_path: Path, env: dict[str, str]) -> None:
    """Whatever a failed tour left running is removed, so a red test leaves no server behind."""
    mlops = str(Path(sys.executable).with_name("mlops"))
    subprocess.run([mlops, "deployments", "delete", "iris"], cwd=tmp_path, env=env, capture_output=True, timeout=120)


def test_readme_has_both_tours():
    blocks = tour_blocks()
    assert {("tour", "python"), ("tour", "shell"), ("tour-file", "train.py")} <= set(blocks)


@pytest.mark.slow
def test_python_tour_runs_verbatim(tmp_path):
    code = tour_blocks()[("tour", "python")]
    env = _env(tmp_path)
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
    finally:
        _cleanup(tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"serving iris 1 at http://", done.stdout), done.stdout
    assert "rolled back to 1" in done.stdout


@pytest.mark.slow
def test_shell_tour_runs_verbatim(tmp_path):
    blocks = tour_blocks()
    (tmp_path / "train.py").write_text(blocks[("tour-file", "train.py")] + "\n")
    env = _env(tmp_path)
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks[("tour", "shell")]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=1500)
    finally:
        _cleanup(tmp_path, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "registered models:/iris/1 (staging)" in out and "registered models:/iris/2" in out
    assert re.search(r"built \S+ +sha256:[0-9a-f]{64}", out), out
    predictions = re.search(r"\(INT64 \[3(?:, 1)?\]\):\n((?:  .+\n){3})", out)
    assert predictions, out  # three rows in rows.csv, three predictions out
