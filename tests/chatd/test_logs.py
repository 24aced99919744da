"""JSON-lines logging: formatter, redaction, bounds and escapes, daily file handler,
configure_logging; refusals logged at a bounded rate."""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter

from chatd.observe.logs import (
    MAX_FIELD_CHARS,
    MAX_TRACEBACK_CHARS,
    MAX_TRUSTED_CHARS,
    REDACTED,
    DailyLogFileHandler,
    EventLogger,
    JsonFormatter,
    Trusted,
    clean_text,
    configure_logging,
    format_ts,
)
from chatd.observe.refusals import LINES_PER_WINDOW, WINDOW_S, LogThrottle, Refusals

TS_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DAY = 24 * 60 * 60


class ListHandler(logging.Handler):
    """Keeps each record and its formatted line."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def objects(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.lines]


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, ListHandler]]:
    logger = logging.getLogger("chatd.test_logs")
    handler = ListHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def test_event_logger_writes_one_flat_json_object(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    EventLogger(logger).info("connection.open", conn_id=17, peer="127.0.0.1:50412")

    (line,) = handler.lines
    assert "\n" not in line
    obj = orjson.loads(line)
    assert list(obj)[:4] == ["ts", "level", "event", "logger"]
    assert TS_PATTERN.match(obj["ts"])
    assert obj == {
        "ts": obj["ts"],
        "level": "info",
        "event": "connection.open",
        "logger": "chatd.test_logs",
        "conn_id": 17,
        "peer": "127.0.0.1:50412",
    }


def test_levels_are_lower_case_and_respect_the_logger_level(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    log = EventLogger(logger)
    log.debug("a")
    log.warning("b")
    log.error("c")
    logger.setLevel(logging.WARNING)
    log.info("dropped")
    assert [(o["level"], o["event"]) for o in handler.objects()] == [
        ("debug", "a"),
        ("warning", "b"),
        ("error", "c"),
    ]


def test_record_points_at_the_caller_not_the_adapter(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    EventLogger(logger).info("x")
    assert handler.records[0].funcName == "test_record_points_at_the_caller_not_the_adapter"


def test_timestamp_is_rfc3339_utc_with_milliseconds() -> None:
    record = logging.LogRecord("chatd", logging.INFO, __file__, 1, "tick", None, None)
    record.created = 1795690380.1239  # 2026-11-26T10:53:00.123Z
    obj = orjson.loads(JsonFormatter().format(record))
    assert obj["ts"] == "2026-11-26T10:53:00.123Z"


def test_timestamps_cut_milliseconds_and_follow_the_second() -> None:
    """Each time its own: the text of the second before is never reused for the next."""
    assert [format_ts(created) for created in (
        1795690380.9999, 1795690381.0, 1795690380.0005, 1795690439.5, 0.25,
    )] == [
        "2026-11-26T10:53:00.999Z", "2026-11-26T10:53:01.000Z", "2026-11-26T10:53:00.000Z",
        "2026-11-26T10:53:59.500Z", "1970-01-01T00:00:00.250Z",
    ]


def test_plain_records_use_the_formatted_message_as_event(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    logger.warning("disk at %d%%", 91)
    logger.info("with fields", extra={"fields": {"user_id": 3}})
    first, second = handler.objects()
    assert first["event"] == "disk at 91%"
    assert second["event"] == "with fields"
    assert second["user_id"] == 3


def test_secret_fields_are_redacted(captured: tuple[logging.Logger, ListHandler]) -> None:
    logger, handler = captured
    EventLogger(logger).info(
        "oops",
        password="hunter22",
        Token="abc",
        authorization="Bearer abc",
        body="hello bob",
        refresh_token="def",
        frame={"type": "send", "body": "secret", "to": "bob"},
        user="alice",
    )
    obj = handler.objects()[0]
    for key in ("password", "Token", "authorization", "body", "refresh_token"):
        assert obj[key] == REDACTED
    assert obj["frame"] == {"type": "send", "body": REDACTED, "to": "bob"}
    assert obj["user"] == "alice"
    assert "hunter22" not in handler.lines[0]
    assert "secret" not in handler.lines[0]


def test_fields_cannot_overwrite_core_keys(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    EventLogger(logger).info("real", event="fake", level="x", ts=0)
    obj = handler.objects()[0]
    assert obj["event"] == "real"
    assert obj["level"] == "info"
    assert obj["field.event"] == "fake"
    assert obj["field.level"] == "x"
    assert obj["field.ts"] == 0


def test_unknown_types_are_written_as_strings(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    log = EventLogger(logger)
    log.info("types", path=Path("/var/lib/chatd"), ids={1, 2} - {2}, mapping={4: "int key"})
    log.info("huge", n=2**70)
    first, second = handler.objects()
    assert first["path"] == "/var/lib/chatd"
    assert first["ids"] == "{1}"
    assert first["mapping"] == {"4": "int key"}
    assert second["n"] == str(2**70)
    assert second["event"] == "huge"


def test_exceptions_become_a_traceback_field(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    try:
        raise ValueError("boom")
    except ValueError:
        EventLogger(logger).exception("handler.crashed", conn_id=5)
    obj = handler.objects()[0]
    assert obj["level"] == "error"
    assert obj["conn_id"] == 5
    assert isinstance(obj["traceback"], str)
    assert obj["traceback"].startswith("Traceback")
    assert "ValueError: boom" in obj["traceback"]


def _log_line(handler: logging.Handler, event: str) -> None:
    record = logging.LogRecord("chatd", logging.INFO, __file__, 1, event, None, None)
    handler.handle(record)


def test_handler_writes_chatd_log_and_rolls_over(tmp_path: Path) -> None:
    handler = DailyLogFileHandler(tmp_path / "logs", keep_days=3)
    handler.setFormatter(JsonFormatter())
    try:
        assert handler.path == tmp_path / "logs" / "chatd.log"
        _log_line(handler, "before")
        handler.doRollover()
        _log_line(handler, "after")
    finally:
        handler.close()
    backups = sorted((tmp_path / "logs").glob("chatd.log.*"))
    assert len(backups) == 1
    assert re.fullmatch(r"chatd\.log\.\d{4}-\d{2}-\d{2}", backups[0].name)
    assert orjson.loads(backups[0].read_text())["event"] == "before"
    assert orjson.loads(handler.path.read_text())["event"] == "after"


def test_handler_rolls_over_when_the_rollover_time_has_passed(tmp_path: Path) -> None:
    handler = DailyLogFileHandler(tmp_path, keep_days=3)
    handler.setFormatter(JsonFormatter())
    try:
        assert handler.rolloverAt % DAY == 0  # next UTC midnight
        _log_line(handler, "day one")
        handler.rolloverAt = 1_577_923_200  # 2020-01-02T00:00:00Z, long past
        _log_line(handler, "day two")
        assert handler.rolloverAt % DAY == 0
        assert handler.rolloverAt > 1_577_923_200
    finally:
        handler.close()
    backup = tmp_path / "chatd.log.2020-01-01"  # named after the day it holds
    assert orjson.loads(backup.read_text())["event"] == "day one"
    assert orjson.loads((tmp_path / "chatd.log").read_text())["event"] == "day two"


def test_handler_keeps_only_keep_days_backups(tmp_path: Path) -> None:
    handler = DailyLogFileHandler(tmp_path, keep_days=2)
    handler.setFormatter(JsonFormatter())
    midnight = 1_795_737_600
    try:
        for day in range(4):
            _log_line(handler, f"day {day}")
            handler.rolloverAt = midnight + day * DAY
            handler.doRollover()
    finally:
        handler.close()
    names = sorted(p.name for p in tmp_path.glob("chatd.log.*"))
    assert names == ["chatd.log.2026-11-28", "chatd.log.2026-11-29"]


def test_log_files_and_directory_are_private_under_an_open_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        handler = DailyLogFileHandler(tmp_path / "var" / "logs")
        handler.setFormatter(JsonFormatter())
        _log_line(handler, "first")
        handler.doRollover()  # the rotated file keeps its mode, the new one is private
        _log_line(handler, "second")
        handler.close()
    finally:
        os.umask(previous)
    paths = [tmp_path / "var", handler.path.parent, handler.path,
             *handler.path.parent.glob("chatd.log.*")]
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in paths] == [
        "0o700", "0o700", "0o600", "0o600",
    ]


def test_reopen_follows_an_external_rotation(tmp_path: Path) -> None:
    handler = DailyLogFileHandler(tmp_path)
    handler.setFormatter(JsonFormatter())
    try:
        _log_line(handler, "old")
        (tmp_path / "chatd.log").rename(tmp_path / "chatd.log.1")  # what logrotate does
        handler.reopen()
        _log_line(handler, "new")
    finally:
        handler.close()
    assert orjson.loads((tmp_path / "chatd.log.1").read_text())["event"] == "old"
    assert orjson.loads((tmp_path / "chatd.log").read_text())["event"] == "new"


def _read_objects(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def test_configure_logging_writes_json_lines_and_undoes_itself(tmp_path: Path) -> None:
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    level_before = root.level
    handle = configure_logging(tmp_path / "logs", level=logging.INFO)
    try:
        log = EventLogger(logging.getLogger("chatd.net"))
        log.info("connection.open", conn_id=1)
        log.debug("not written")
        logging.getLogger("asyncio").error("from a library")
        (tmp_path / "logs" / "chatd.log").rename(tmp_path / "logs" / "chatd.log.1")
        handle.reopen()
        log.info("connection.close", conn_id=1)
    finally:
        handle.close()
    handle.close()  # idempotent
    assert root.handlers == handlers_before
    assert root.level == level_before

    # Records queued before reopen may land in either file; together they are complete.
    lines = _read_objects(tmp_path / "logs" / "chatd.log.1")
    lines += _read_objects(tmp_path / "logs" / "chatd.log")
    assert [(o["logger"], o["event"]) for o in lines] == [
        ("chatd.net", "connection.open"),
        ("asyncio", "from a library"),
        ("chatd.net", "connection.close"),
    ]


def test_configure_logging_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handle = configure_logging(None)
    try:
        assert handle.file_handler is None
        EventLogger(logging.getLogger("chatd.app")).info("server.start", port=8765)
    finally:
        handle.close()
    (line,) = capsys.readouterr().err.splitlines()
    assert orjson.loads(line)["event"] == "server.start"


def test_configure_logging_to_file_and_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = configure_logging(tmp_path, stderr=True)
    try:
        EventLogger(logging.getLogger("chatd.app")).info("server.start", port=8765)
    finally:
        handle.close()
    err_lines = capsys.readouterr().err.splitlines()
    assert [orjson.loads(line)["event"] for line in err_lines] == ["server.start"]
    assert _read_objects(tmp_path / "chatd.log")[0]["port"] == 8765


def test_configured_events_from_many_threads_all_arrive_in_order(tmp_path: Path) -> None:
    handle = configure_logging(tmp_path)
    log = EventLogger(logging.getLogger("chatd.hub"))

    def burst(thread: int) -> None:
        for n in range(500):
            log.info("message.accepted", thread=thread, n=n, body="never written")

    try:
        threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("store.error", op="submit")
    finally:
        handle.close()
    lines = _read_objects(tmp_path / "chatd.log")
    for thread in range(4):
        assert [o["n"] for o in lines if o.get("thread") == thread] == list(range(500))
    assert all(o["body"] == REDACTED for o in lines if "thread" in o)
    (error,) = [o for o in lines if o["event"] == "store.error"]
    assert error["level"] == "error"
    assert error["op"] == "submit"
    assert "ValueError: boom" in str(error["traceback"])


# --- untrusted strings: bounded and escaped ------------------------------------------------


def test_long_string_fields_are_cut_with_a_count(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    EventLogger(logger).warning("login.rate_limited", user="x" * (64 * 1024), ip="10.0.0.1")
    obj = handler.objects()[0]
    assert obj["user"] == "x" * MAX_FIELD_CHARS + f"...[{64 * 1024 - MAX_FIELD_CHARS} more chars]"
    assert obj["ip"] == "10.0.0.1"
    assert len(handler.lines[0]) < 400


def test_control_characters_are_escaped_everywhere(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    EventLogger(logger).info(
        "login.failed",
        user="a\x1b[2Jb\x07c\x9bd\u202ee\r\n\ud800",
        nested={"k\x1b": "v\x1b", "n": 1},
        many=["\x1b"] * 40,
        flag=True,
    )
    obj = handler.objects()[0]
    assert obj["user"] == "a\\x1b[2Jb\\x07c\\x9bd\\u202ee\\x0d\\x0a\\ud800"
    assert obj["nested"] == {"k\\x1b": "v\\x1b", "n": 1}
    assert obj["many"] == ["\\x1b"] * 32 + ["...[8 more items]"]
    assert obj["flag"] is True
    line = handler.lines[0]
    assert "\x1b" not in line and "\\u001b" not in line and "\u202e" not in line


def test_trusted_values_and_paths_get_a_larger_bound(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    long_path = Path("/srv") / ("d" * 300) / "chatd.db"
    reason = "cannot open the database: " + "y" * 300
    EventLogger(logger).error("server.refused", reason=Trusted(reason), path=long_path,
                              too_long=Trusted("z" * (MAX_TRUSTED_CHARS + 1)))
    obj = handler.objects()[0]
    assert obj["reason"] == reason
    assert obj["path"] == str(long_path)
    assert str(obj["too_long"]).endswith("...[1 more chars]")


def test_tracebacks_and_library_messages_are_bounded(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    try:
        raise ValueError("bad name " + "\x1b" + "n" * (64 * 1024))
    except ValueError:
        EventLogger(logger).exception("http.handler_failed")
    logger.warning("a library says %s", "\x1b]0;title\x07" + "m" * (64 * 1024))
    crashed, library = handler.objects()
    traceback = str(crashed["traceback"])
    assert traceback.startswith("Traceback (most recent call last):\n")
    assert "ValueError: bad name \\x1bnnn" in traceback
    assert len(traceback) < MAX_TRACEBACK_CHARS + 100
    assert str(library["event"]).startswith("a library says \\x1b]0;title\\x07mmm")
    assert len(str(library["event"])) < MAX_TRUSTED_CHARS + 100


def test_stderr_lines_escape_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    handle = configure_logging(None)
    try:
        EventLogger(logging.getLogger("chatd.accounts")).info("login.failed",
                                                               user="\x1b[31mred")
    finally:
        handle.close()
    (line,) = capsys.readouterr().err.splitlines()
    assert "\x1b" not in line and "\\u001b" not in line
    assert orjson.loads(line)["user"] == "\\x1b[31mred"


def test_clean_text() -> None:
    assert clean_text("alice") == "alice"
    assert clean_text("abcdef", 3) == "abc...[3 more chars]"
    assert clean_text("a\x1bb", 2) == "a\\x1b...[1 more chars]"
    assert clean_text("line\none\t", keep="\n") == "line\none\\x09"
    assert clean_text("\U000e0001") == "\\U000e0001"  # a tag character: invisible
    assert clean_text("ünïcode ✓ 😀") == "ünïcode ✓ 😀"


# --- refusals at a bounded rate ----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refusals(clock: FakeClock, **throttle: int) -> tuple[Refusals, CollectorRegistry]:
    registry = CollectorRegistry()
    counter = Counter("test_refusals", "refusals", ["reason"], registry=registry)
    return Refusals(counter, LogThrottle(clock=clock, **throttle)), registry


def _counted(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value("test_refusals_total", {"reason": reason})


def _events(handler: ListHandler) -> list[tuple[object, ...]]:
    return [(o["event"], o.get("ip"), o.get("of"), o.get("suppressed")) for o in handler.objects()]


def test_refusals_log_a_few_lines_per_key_and_count_them_all(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    log = EventLogger(logger)
    clock = FakeClock()
    refusals, registry = _refusals(clock)
    for _ in range(100):
        refusals.record(log, "login.rate_limited", key="10.0.0.1", ip="10.0.0.1")
        refusals.record(log, "login.rate_limited", key="10.0.0.2", ip="10.0.0.2")
        refusals.record(log, "token.refused", key="10.0.0.1", level=logging.INFO,
                        ip="10.0.0.1")
    assert _counted(registry, "login.rate_limited") == 200
    assert _counted(registry, "token.refused") == 100
    assert _counted(registry, "login.failed") == 0  # exported before the first one
    events = _events(handler)
    assert len(events) == 3 * LINES_PER_WINDOW
    assert events.count(("login.rate_limited", "10.0.0.1", None, None)) == LINES_PER_WINDOW
    assert {o["level"] for o in handler.objects() if o["event"] == "token.refused"} == {"info"}

    handler.lines.clear()
    clock.now += WINDOW_S  # the windows end: one summary each, then lines again
    refusals.record(log, "login.rate_limited", key="10.0.0.1", ip="10.0.0.1")
    assert _events(handler) == [
        ("log.suppressed", None, "login.rate_limited", 95),
        ("log.suppressed", None, "login.rate_limited", 95),
        ("log.suppressed", None, "token.refused", 95),
        ("login.rate_limited", "10.0.0.1", None, None),
    ]
    assert [o["key"] for o in handler.objects()[:3]] == ["10.0.0.1", "10.0.0.2", "10.0.0.1"]


def test_flush_writes_the_summary_of_a_quiet_client(
    captured: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = captured
    clock = FakeClock()
    refusals, _ = _refusals(clock, lines=1)
    for _ in range(3):
        refusals.record(EventLogger(logger), "token.refused", key="10.0.0.9", ip="10.0.0.9")
    refusals.flush()
    assert len(handler.lines) == 1  # the window has not ended yet
    clock.now += WINDOW_S - 0.001
    refusals.flush()
    assert len(handler.lines) == 1
    clock.now += 0.001
    refusals.flush()
    refusals.flush()  # once only
    assert _events(handler)[1:] == [("log.suppressed", None, "token.refused", 2)]


def test_throttle_memory_is_bounded(captured: tuple[logging.Logger, ListHandler]) -> None:
    logger, handler = captured
    log = EventLogger(logger)
    clock = FakeClock()
    throttle = LogThrottle(lines=1, max_keys=10, clock=clock)
    allowed = [throttle.allow(log, "login.failed", f"10.0.{n}.1") for n in range(1000)]
    assert allowed.count(True) == 11  # ten keys, then one line for the shared "*" window
    assert len(throttle._windows) == 11
    long_key = "k" * 10_000
    clock.now += WINDOW_S
    assert throttle.allow(log, "login.failed", long_key)
    assert max(len(key) for _, key in throttle._windows) <= 64
    summary = [o for o in handler.objects() if o["event"] == "log.suppressed"]
    assert [(o["key"], o["suppressed"]) for o in summary] == [("*", 989)]


def test_throttle_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        LogThrottle(lines=0)
    with pytest.raises(ValueError):
        LogThrottle(window=0)
