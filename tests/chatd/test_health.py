"""Health answers: status rules, schema, one log line per threshold crossing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource

from chatd.observe.health import HealthMonitor, disk_used_pct
from libchat import __version__
from libchat.limits import PROTOCOL_VERSION
from libchat.protocol import Health, encode_body

SCHEMAS = Path(__file__).resolve().parents[2] / "protocol" / "schemas"


class FakeDisk:
    """Disk use in percent, set by the test; raises when ``error`` is set."""

    def __init__(self, pct: float = 10.0) -> None:
        self.pct = pct
        self.error: OSError | None = None
        self.paths: list[Path] = []

    def __call__(self, path: Path) -> float:
        self.paths.append(path)
        if self.error is not None:
            raise self.error
        return self.pct


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def disk() -> FakeDisk:
    return FakeDisk()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def monitor(tmp_path: Path, disk: FakeDisk, clock: FakeClock) -> HealthMonitor:
    return HealthMonitor(
        tmp_path,
        alert_pct=80.0,
        slow_commit_s=1.0,
        logger=logging.getLogger("chatd.test_health"),
        disk_usage=disk,
        clock=clock,
    )


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (record.levelname.lower(), record.getMessage())
        for record in caplog.records
        if record.name == "chatd.test_health"
    ]


def validate_against_schema(health: Health) -> None:
    resources = [
        (
            f"https://libchat.example/protocol/1/{path.name}",
            Resource.from_contents(json.loads(path.read_text())),
        )
        for path in SCHEMAS.glob("*.json")
    ]
    registry: Registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / "health.json").read_text())
    Draft202012Validator(schema, registry=registry).validate(orjson.loads(encode_body(health)))


def test_disk_used_pct_measures_a_real_directory(tmp_path: Path) -> None:
    assert 0.0 <= disk_used_pct(tmp_path) <= 100.0


def test_all_well_is_ok_and_200(
    monitor: HealthMonitor, disk: FakeDisk, clock: FakeClock, tmp_path: Path
) -> None:
    clock.now += 12.5
    code, health = monitor.status(connections=3, db_ok=True, last_commit_seconds=0.004)
    assert code == 200
    assert health == Health(
        status="ok",
        version=__version__,
        protocol=PROTOCOL_VERSION,
        uptime_s=12.5,
        connections=3,
        db="ok",
        disk_used_pct=10.0,
    )
    assert disk.paths == [tmp_path]
    validate_against_schema(health)


def test_no_commit_yet_is_ok(monitor: HealthMonitor) -> None:
    code, health = monitor.status(connections=0, db_ok=True, last_commit_seconds=None)
    assert (code, health.status) == (200, "ok")


def test_store_down_is_503_degraded_with_db_error(monitor: HealthMonitor) -> None:
    code, health = monitor.status(connections=0, db_ok=False, last_commit_seconds=None)
    assert code == 503
    assert (health.status, health.db) == ("degraded", "error")
    validate_against_schema(health)


def test_slow_commits_degrade_and_log_once(
    monitor: HealthMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(3):
        code, health = monitor.status(connections=1, db_ok=True, last_commit_seconds=1.5)
        assert (code, health.status, health.db) == (200, "degraded", "ok")
    _, health = monitor.status(connections=1, db_ok=True, last_commit_seconds=0.01)
    assert health.status == "ok"
    assert events(caplog) == [("warning", "store.commit_slow"), ("info", "store.commit_ok")]


def test_disk_threshold_degrades_and_logs_only_on_crossings(
    monitor: HealthMonitor, disk: FakeDisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    statuses = []
    for pct in (50.0, 79.9, 80.0, 95.0, 85.0, 60.0, 70.0, 81.0):
        disk.pct = pct
        _, health = monitor.status(connections=0, db_ok=True, last_commit_seconds=None)
        statuses.append(health.status)
        assert health.disk_used_pct == pct
    assert statuses == ["ok", "ok", "degraded", "degraded", "degraded", "ok", "ok", "degraded"]
    assert events(caplog) == [
        ("warning", "disk.usage_high"),
        ("info", "disk.usage_ok"),
        ("warning", "disk.usage_high"),
    ]
    fields = [getattr(r, "fields", None) for r in caplog.records if r.name == "chatd.test_health"]
    assert fields[0] == {"used_pct": 80.0, "alert_pct": 80.0}


def test_disk_pct_is_clamped_and_rounded(monitor: HealthMonitor, disk: FakeDisk) -> None:
    disk.pct = 42.123456
    assert monitor.status(0, True, None)[1].disk_used_pct == 42.12
    disk.pct = 100.5
    assert monitor.status(0, True, None)[1].disk_used_pct == 100.0
    disk.pct = -1.0
    assert monitor.status(0, True, None)[1].disk_used_pct == 0.0


def test_unmeasurable_disk_counts_as_full(
    monitor: HealthMonitor, disk: FakeDisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    disk.error = FileNotFoundError("gone")
    for _ in range(2):
        code, health = monitor.status(connections=0, db_ok=True, last_commit_seconds=None)
        assert code == 200
        assert (health.status, health.disk_used_pct) == ("degraded", 100.0)
    validate_against_schema(health)
    disk.error = None
    assert monitor.status(0, True, None)[1].status == "ok"
    disk.error = FileNotFoundError("gone again")
    monitor.status(0, True, None)
    assert events(caplog) == [
        ("warning", "disk.check_failed"),
        ("warning", "disk.usage_high"),
        ("info", "disk.usage_ok"),
        ("warning", "disk.check_failed"),
        ("warning", "disk.usage_high"),
    ]


def test_uptime_follows_the_clock(monitor: HealthMonitor, clock: FakeClock) -> None:
    assert monitor.status(0, True, None)[1].uptime_s == 0.0
    clock.now += 3600.0004
    assert monitor.status(0, True, None)[1].uptime_s == 3600.0


def test_defaults_use_the_real_disk_and_clock(tmp_path: Path) -> None:
    code, health = HealthMonitor(tmp_path).status(0, True, None)
    assert code == 200
    assert 0.0 <= health.disk_used_pct <= 100.0
    assert health.uptime_s >= 0.0
