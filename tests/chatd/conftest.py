"""Fixtures for the chatd integration tests: real chatd processes on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chatd.server import ChatdProcess
from tests.support.aio import run_async as run_async  # the modules here import it from here


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The store behind the servers of a module: SQLite, and PostgreSQL too for modules
    that say ``BACKENDS = ("sqlite", "postgres")`` (the contract suites)."""
    if "backend" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "BACKENDS", ("sqlite",))
        metafunc.parametrize("backend", backends, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def database(backend: str) -> Iterator[str | None]:
    """The ``--db`` URL for ``backend``: None (the SQLite file in the data dir), or a
    PostgreSQL schema of its own, dropped afterwards."""
    if backend == "sqlite":
        yield None
        return
    from tests.chatd.pg import pg_schema  # it imports this module: not at the top

    with pg_schema() as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[ChatdProcess]:
    """One chatd with default flags, shared by the tests of a module (each test uses
    fresh users). After the module it must still shut down cleanly: exit status 0."""
    base = tmp_path_factory.mktemp("chatd")
    with database(backend) as db:
        process = ChatdProcess(base / "data", base / "logs", db=db).start()
        yield process
        alive = process.proc is not None and process.proc.poll() is None
        try:
            code = process.stop() if alive else None
        finally:
            if process.proc is not None and process.proc.poll() is None:
                process.kill()
    assert alive, "chatd died during the module:\n" + "".join(process.output)[-2000:]
    assert code == 0, "".join(process.output)[-2000:]


@pytest.fixture
def make_server(tmp_path: Path, backend: str) -> Iterator[Callable[..., ChatdProcess]]:
    """Start a chatd with extra flags; every server started is stopped at teardown.
    The servers of one test share one database, so a restart finds its data."""
    started: list[ChatdProcess] = []
    with database(backend) as db:

        def make(*args: str, data_dir: Path | None = None, port: int = 0) -> ChatdProcess:
            data = data_dir or tmp_path / f"data{len(started)}"
            logs = tmp_path / f"logs{len(started)}"
            process = ChatdProcess(data, logs, *args, db=db).start(port)
            started.append(process)
            return process

        try:
            yield make
        finally:
            for process in started:
                _shut(process)


def _shut(process: ChatdProcess) -> None:
    if process.proc is None or process.proc.poll() is not None:
        return
    try:
        process.stop()
    except Exception:
        process.kill()
