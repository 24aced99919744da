"""chatpad runs on Windows: neither it nor anything it imports may need a POSIX-only
module, uvloop, or chatd (which imports uvloop).

The rule, precisely:

1. chatpad's own source imports none of the forbidden modules (an AST walk).
2. Importing every chatpad module in a fresh interpreter loads none of them, except what
   the standard library itself loads on POSIX for modules that have a Windows branch: on
   Linux ``subprocess`` imports ``fcntl`` (on Windows it imports ``msvcrt``/``_winapi``
   instead). The check takes the modules those stdlib imports load as a baseline and
   fails on any forbidden module that appears on top of it: so a third-party dependency
   (pygame, pygame_gui, apsw, platformdirs, ...) pulling in ``fcntl`` or ``pwd`` would fail.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import chatpad

FORBIDDEN = frozenset({"uvloop", "fcntl", "termios", "pwd", "grp", "resource", "chatd",
                       "tty", "pty", "posix"})
# stdlib modules with a platform branch; what they load on POSIX is not chatpad's doing
STDLIB_BASELINE = ("os", "subprocess", "locale", "signal", "selectors", "socket", "ssl",
                   "threading", "queue", "shutil", "tempfile", "platform", "ctypes")

PACKAGE = Path(chatpad.__file__).parent


def _top(name: str) -> str:
    return name.split(".")[0]


def test_chatpad_source_imports_nothing_posix_only() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if _top(n) in FORBIDDEN]
    assert offenders == []


SCRIPT = """
import importlib, json, pkgutil, sys
for name in {baseline!r}:
    importlib.import_module(name)
before = set(sys.modules)
import chatpad
names = [m.name for m in pkgutil.walk_packages(chatpad.__path__, "chatpad.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({{"new": sorted(set(sys.modules) - before), "modules": names}}))
"""


def test_import_closure_loads_nothing_posix_only() -> None:
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYGAME_HIDE_SUPPORT_PROMPT="1")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(baseline=STDLIB_BASELINE)],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert "chatpad.net" in result["modules"] and "chatpad.app" in result["modules"]
    loaded = {_top(name) for name in result["new"]}
    assert "pygame" in loaded and "libchat" in loaded  # the walk really imported things
    assert sorted(loaded & FORBIDDEN) == []
