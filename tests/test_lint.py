"""No unused import or variable and no undefined name anywhere in the tree: ruff with
pyflakes' checks only ([tool.ruff] in pyproject.toml)."""
import shutil
import subprocess
import sys
from pathlib import Path

from factories import ROOT


def test_pyflakes_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    command = str(ruff) if ruff.exists() else shutil.which("ruff") or "ruff"
    proc = subprocess.run([command, "check", "--no-cache", "--output-format", "concise", str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
