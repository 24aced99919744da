"""The PyInstaller one-file executable builds and runs headless (what CI does)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import chatpad

ROOT = Path(__file__).resolve().parents[2]
PYINSTALLER = Path(sys.executable).parent / "pyinstaller"


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(not PYINSTALLER.exists(), reason="pyinstaller is not installed (dev extra)")
def test_build_and_run_executable(tmp_path: Path) -> None:
    subprocess.run(
        [str(PYINSTALLER), "--noconfirm", "--distpath", str(tmp_path / "dist"),
         "--workpath", str(tmp_path / "build"), str(ROOT / "chatpad.spec")],
        cwd=ROOT, check=True, capture_output=True, timeout=380,
    )
    exe = tmp_path / "dist" / ("chatpad.exe" if os.name == "nt" else "chatpad")
    assert exe.exists()
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                             timeout=60, check=True)
    assert version.stdout.strip() == f"chatpad {chatpad.__version__}"
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy",
               CHATPAD_HOME=str(tmp_path / "home"))
    selftest = subprocess.run([str(exe), "--self-test"], capture_output=True, text=True,
                              timeout=120, env=env)
    assert selftest.returncode == 0, selftest.stderr
    assert "self-test ok" in selftest.stdout
    shutil.rmtree(tmp_path / "build", ignore_errors=True)
