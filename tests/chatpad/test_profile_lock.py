"""One chatpad per profile: a second one on the same profile says so and exits 3; a
lock left by a killed chatpad is no obstacle; another profile runs side by side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatpad.__main__ import EXIT_PROFILE_IN_USE
from chatpad.lock import ProfileInUse, ProfileLock
from tests.chatpad.driver import Driver

pytestmark = pytest.mark.gui


def run_chatpad(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHATPAD_HOME=str(home), SDL_VIDEODRIVER="dummy")
    return subprocess.run([sys.executable, "-m", "chatpad", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_a_second_chatpad_on_the_same_profile_is_refused(_chatpad_home: Path) -> None:
    driver = Driver("http://127.0.0.1:9")
    try:
        second = run_chatpad(_chatpad_home)  # another process, the same profile
        assert second.returncode == EXIT_PROFILE_IN_USE
        assert "already open in another chatpad" in second.stderr
        assert "--profile" in second.stderr
        with pytest.raises(ProfileInUse):  # and another App in this process
            Driver("http://127.0.0.1:9")
        other = Driver("http://127.0.0.1:9", profile="work")  # another profile: fine
        other.close()
        assert (_chatpad_home / "default" / "chatpad.lock").stat().st_mode & 0o077 == 0
    finally:
        driver.close()
    Driver("http://127.0.0.1:9").close()  # closed: the profile is free again


def test_a_killed_chatpad_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "profile" / "chatpad.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from chatpad.lock import ProfileLock; "
         f"lock = ProfileLock(Path({str(path)!r})); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(ProfileInUse):
            ProfileLock(path)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    ProfileLock(path).release()  # the dead process's lock went with it
