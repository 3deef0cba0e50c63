"""The layers hold: every import, also inside functions and under TYPE_CHECKING, points down
the data path (.importlinter has the contracts; import-linter reads the source, it imports
nothing, so an import hidden in a function body is seen as any other)."""
import shutil
import subprocess
import sys
from pathlib import Path

from factories import ROOT


def test_imports_point_down_the_data_path():
    lint = Path(sys.executable).parent / "lint-imports"
    command = [str(lint)] if lint.exists() else [shutil.which("lint-imports") or "lint-imports"]
    proc = subprocess.run([*command, "--no-cache", "--config", str(ROOT / ".importlinter")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout
