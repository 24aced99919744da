"""contrib/systemd: the units pass ``systemd-analyze verify``, run a ``chatd serve``
command line chatd accepts, and the template unit differs from the plain one only
where an instance must."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.cli import build_parser

SYSTEMD = Path(__file__).resolve().parents[1] / "contrib" / "systemd"
UNITS = ("chatd.service", "chatd@.service")
INSTALLED_CHATD = "/opt/chatd/bin/chatd"  # where the units expect it (README.md)


def _directives(unit: str) -> list[tuple[str, str]]:
    """(key, value) of every setting, continuation lines joined, comments dropped."""
    text = (SYSTEMD / unit).read_text().replace("\\\n", " ")
    settings = []
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings.append((key.strip(), " ".join(value.split())))
    return settings


def _exec_start(unit: str) -> list[str]:
    (command,) = (value for key, value in _directives(unit) if key == "ExecStart")
    return shlex.split(command.replace("%i", "1"))


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_runs_a_command_line_chatd_accepts(unit: str) -> None:
    program, *args = _exec_start(unit)
    assert program == INSTALLED_CHATD
    assert build_parser().parse_args(args).command == "serve"


def test_the_template_differs_only_where_an_instance_must() -> None:
    plain, template = (set(_directives(unit)) for unit in UNITS)
    differing = {key for key, _ in plain ^ template}
    assert differing == {"Description", "ExecStart", "StateDirectory", "LogsDirectory",
                         "WorkingDirectory"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true",
                    reason="systemd-analyze is missing (apt-get install systemd)")
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    # The installed chatd stands at this environment's; `man chatd` need not be
    # installed here (--man=no).
    chatd = Path(sys.executable).parent / "chatd"
    text = (SYSTEMD / unit).read_text().replace(INSTALLED_CHATD, str(chatd))
    (tmp_path / unit).write_text(text)
    name = unit.replace("@.", "@1.")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / name)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
