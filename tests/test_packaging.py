"""The distribution: the engine alone by default, chatd and chatpad behind the extras
whose packages they check for (with a one-line hint when they are missing), and a wheel
that carries the license, the man pages, the protocol and the sample configuration and
builds without a deprecation warning."""

from __future__ import annotations

import email.parser
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from chatd import cli
from chatpad import __main__ as chatpad_main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENGINE = {"h11", "wsproto", "attrs", "cattrs", "orjson"}


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalized (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _distributions(modules: tuple[str, ...]) -> set[str]:
    """The distributions that provide ``modules`` in this environment."""
    providers = importlib.metadata.packages_distributions()
    return {_name(dist) for module in modules for dist in providers[module]}


def test_the_engine_alone_needs_five_packages() -> None:
    assert {_name(r) for r in PYPROJECT["project"]["dependencies"]} == ENGINE


def test_the_server_extra_is_what_chatd_checks_for() -> None:
    server = {_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["server"]}
    # uvloop is optional at run time (no uvloop on Windows: chatd then runs on asyncio)
    assert server == _distributions(cli.SERVER_MODULES) | {"uvloop"}


def test_the_gui_extra_is_what_chatpad_checks_for() -> None:
    gui = {_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["gui"]}
    assert gui == _distributions(chatpad_main.GUI_MODULES)


@pytest.mark.parametrize(("program", "missing", "line", "status"), [
    ("chatd.cli", "psycopg_pool", cli.MISSING_EXTRA, cli.EXIT_MISSING_EXTRA),
    ("chatd.cli", "apsw", cli.MISSING_EXTRA, cli.EXIT_MISSING_EXTRA),
    ("chatpad.__main__", "pygame_gui", chatpad_main.MISSING_EXTRA,
     chatpad_main.EXIT_MISSING_EXTRA),
])
def test_a_missing_extra_gets_one_line_not_a_traceback(
    program: str, missing: str, line: str, status: int
) -> None:
    # The console scripts call these mains; the module is made unimportable as if its
    # extra had not been installed.
    script = (f"import sys; sys.modules[{missing!r}] = None\n"
              f"from {program} import main; sys.exit(main(['--version']))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (status, "", line + "\n")


def test_the_console_scripts_are_those_mains() -> None:
    assert PYPROJECT["project"]["scripts"] == {
        "chatd": "chatd.cli:main", "chatpad": "chatpad.__main__:main"}


def test_the_wheel(tmp_path: Path) -> None:
    """Built from a copy of the tree (pip wheel, isolated: a few seconds)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("libchat", "chatd", "chatpad", "man", "protocol", "contrib"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "dist"),
         str(source)], capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "deprecat" not in output.lower(), output

    (wheel,) = (tmp_path / "dist").glob("libchat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    requires = metadata.get_all("Requires-Dist") or []
    assert {_name(r) for r in requires if "extra ==" not in r} == ENGINE
    assert {"server", "gui"} <= set(metadata.get_all("Provides-Extra") or [])
    data = {n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n}
    assert {
        "share/man/man8/chatd.8",
        "share/man/man1/chatpad.1",
        "share/doc/libchat/CHANGELOG.md",
        "share/doc/libchat/protocol/PROTOCOL.md",
        "share/doc/libchat/protocol/CHANGELOG.md",
        "share/doc/libchat/contrib/chatd.toml",
        "share/doc/libchat/contrib/systemd/chatd.service",
    } <= data
    schemas = {p.name for p in (ROOT / "protocol" / "schemas").glob("*.json")}
    assert schemas == {Path(n).name for n in data if "/protocol/schemas/" in n}
