"""libchat does no I/O and never waits: nothing in its import closure may do either,
except :mod:`libchat.aio`, the asyncio host, which is imported only on demand.

Two checks. (1) An AST walk of every ``libchat/*.py`` file: libchat's own ``import``
statements (at any depth, including inside functions) never name a module that does
I/O or waits. (2) A fresh interpreter imports every libchat module and must not end up
with any such module loaded, whoever imported it.

What the second check tolerates, and why:

* ``threading``: ``attrs`` (``attr._compat``) and the stdlib ``logging`` import it for
  their locks; neither starts a thread. libchat itself may not import it (check 1).
* ``_socket``: ``typing_extensions`` (pulled in by ``cattrs``) imports the C module for
  one type annotation; ``socket``, the module that opens sockets, must stay out.
* ``time``, ``os``, ``io``: the interpreter has them loaded before any user code runs,
  so their presence says nothing; check 1 keeps libchat from using them.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import libchat

LIBCHAT_DIR: Final = Path(libchat.__file__).resolve().parent
FORBIDDEN: Final = frozenset(
    {
        "asyncio",
        "socket",
        "selectors",
        "threading",
        "time",
        "subprocess",
        "ssl",
        "select",
        "multiprocessing",
        "concurrent",
        "signal",
        "pygame",
        "pygame_gui",
        "apsw",
        "psycopg",
        "psycopg_pool",
        "uvloop",
        "sqlite3",
        "http.client",
        "urllib.request",
        "os",
        "io",
        "secrets",
    }
)
# Loaded by dependencies for reasons given in the module docstring.
TOLERATED_TRANSITIVELY: Final = frozenset({"threading", "time", "os", "io"})
# The one module that does I/O, and all it may use for it.
IO_MODULE: Final = "aio"
IO_ALLOWED: Final = frozenset({"asyncio", "ssl"})


def _sans_io_sources() -> list[Path]:
    return sorted(p for p in LIBCHAT_DIR.glob("*.py") if p.stem != IO_MODULE)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _forbidden(name: str, names: frozenset[str] = FORBIDDEN) -> bool:
    """Whether ``name`` is one of ``names`` or inside one of those packages."""
    parts = name.split(".")
    return any(".".join(parts[: i + 1]) in names for i in range(len(parts)))


def test_libchat_sources_import_nothing_that_does_io() -> None:
    sources = _sans_io_sources()
    assert {p.stem for p in sources} >= {
        "server",
        "client",
        "states",
        "protocol",
        "events",
        "session",
    }
    found = {
        f"{path.name}: {name}" for path in sources for name in _imports(path) if _forbidden(name)
    }
    assert not found, f"libchat imports modules that do I/O or wait: {sorted(found)}"


def test_the_walk_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nfrom asyncio import sleep\n\ndef f():\n    import time\n")
    assert {name for name in _imports(bad) if _forbidden(name)} == {
        "asyncio",
        "asyncio.sleep",
        "time",
    }


def test_importing_libchat_loads_nothing_that_does_io() -> None:
    modules = sorted(f"libchat.{p.stem}" for p in _sans_io_sources() if p.stem != "__init__")
    code = (
        "import sys\n"
        "import libchat\n"
        "assert all(hasattr(libchat, n) for n in libchat.__all__ if n != 'AsyncClient')\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    # Without pytest-cov's variables: they make the child start coverage, which loads
    # sqlite3, subprocess and more before libchat is even imported.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE_", "COVERAGE_"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=LIBCHAT_DIR.parent,
        env=env,
        timeout=60,
    )
    loaded = set(result.stdout.split())
    assert "libchat.server" in loaded and "libchat.client" in loaded
    bad = sorted(name for name in loaded if _forbidden(name, FORBIDDEN - TOLERATED_TRANSITIVELY))
    assert not bad, f"importing libchat loads: {bad}"


def test_a_server_of_the_engines_never_loads_the_client_side() -> None:
    """``libchat``'s names are imported on first use: chatd, which imports the server
    engine and the protocol types, starts without the session, the outbox and the
    client engine (a tenth of its start-up)."""
    code = (
        "import sys\n"
        "import libchat.protocol, libchat.server\n"
        "from libchat import ServerConnection, __version__\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE_", "COVERAGE_"))}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=LIBCHAT_DIR.parent, env=env, timeout=60,
    )
    loaded = set(result.stdout.split())
    assert "libchat.server" in loaded
    assert not loaded & {"libchat.client", "libchat.session", "libchat.outbox", "libchat.aio"}


def test_aio_is_the_only_io_module_and_uses_only_asyncio_and_ssl() -> None:
    path = LIBCHAT_DIR / f"{IO_MODULE}.py"
    found = {name for name in _imports(path) if _forbidden(name)}
    assert found, "libchat.aio should do the I/O"
    assert {name for name in found if not _forbidden(name, IO_ALLOWED)} == set()


def test_the_host_is_exported_lazily() -> None:
    from libchat.aio import AsyncClient

    assert libchat.AsyncClient is AsyncClient
    assert "AsyncClient" in libchat.__all__
    try:
        _ = libchat.NoSuchThing  # type: ignore[attr-defined]
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
