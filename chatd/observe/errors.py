"""Error tracking: ``--sentry-dsn`` sends each error event to Sentry (or a service
that speaks its protocol: GlitchTip, a self-hosted Sentry...).

An error event is a log record at ERROR or above that carries an exception: every
:meth:`chatd.observe.logs.EventLogger.exception` line, and the tracebacks other
libraries log (asyncio's "exception in callback"). Each becomes one tracker event
with the stack trace, the event name as its ``event`` tag, the request context
(:mod:`chatd.observe.context`: route, connection id, the peer's network) and the user
id when known, and the line's other fields as extras. Nothing else is sent: no
breadcrumbs from the log, no local variables of the frames, no default PII, and
:func:`scrub` runs on every event before it leaves (``before_send``), replacing any
value whose name looks like a body, password, token, key or cookie, and anything in
a string that looks like a bearer token or a JWT.

sentry-sdk is an optional extra (``pip install 'libchat[sentry]'``, or
``pip install sentry-sdk``); it is imported only when a DSN is configured.
:func:`load` fails with :class:`SentryMissing` when it is missing, and ``chatd serve``
then stops with one ``chatd:`` line and status 3, like chatd without its ``server``
extra.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final

from chatd.observe.logformat import REDACTED, clean_value, exception_type

__all__ = [
    "FLUSH_TIMEOUT",
    "ErrorTracker",
    "ErrorTrackingUnavailable",
    "SentryMissing",
    "load",
    "scrub",
]

FLUSH_TIMEOUT: Final = 2.0  # seconds a stopping server waits for queued events to leave
# Names (of extras, contexts, headers, frame variables...) whose values are never sent:
# the log formatter's secret names, and what a tracker's own integrations may add.
SECRET_NAME: Final = re.compile(
    r"body|password|passwd|token|authorization|secret|cookie|api_?key|dsn|credential",
    re.IGNORECASE,
)
# Text that looks like a credential wherever it appears (an exception message, a
# traceback): a bearer header's value, a JWT (chatd's tokens are HS256 JWTs).
SECRET_TEXT: Final = re.compile(
    r"(?i:bearer)\s+\S+|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)
# The request context's fields, sent as the "request" context and tags.
_CONTEXT_FIELDS: Final = ("route", "conn_id", "peer")


class ErrorTrackingUnavailable(Exception):
    """``--sentry-dsn`` was given but sentry-sdk refuses the DSN."""


class SentryMissing(ErrorTrackingUnavailable):
    """``--sentry-dsn`` was given but sentry-sdk is not installed: ``status`` is the exit
    status of a missing extra (:data:`chatd.cli.EXIT_MISSING_EXTRA`; systemd's
    ``RestartPreventExitStatus=3`` does not restart what a restart cannot heal)."""

    status: Final = 3


def scrub(value: Any, name: str = "") -> Any:
    """``value`` with every entry whose name looks secret (:data:`SECRET_NAME`)
    and every credential-like text (:data:`SECRET_TEXT`) replaced by
    ``"[redacted]"``, recursively through dicts and lists. The ``before_send`` of the tracker."""
    if name and SECRET_NAME.search(name):
        return REDACTED
    if isinstance(value, str):
        return SECRET_TEXT.sub(REDACTED, value)
    if isinstance(value, Mapping):
        return {key: scrub(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


def _before_send(event: Any, hint: Any) -> Any:
    extra = event.get("extra")
    if isinstance(extra, dict):
        extra.pop("sys.argv", None)  # in case an integration adds it all the same
    return scrub(event)


class ErrorTracker:
    """The installed adapter: a logging handler that turns error events into tracker
    events. :meth:`close` flushes what is queued (up to :data:`FLUSH_TIMEOUT`) and
    removes the handler."""

    def __init__(self, sdk: ModuleType, dsn: str, release: str) -> None:
        self._sdk = sdk
        self._dsn = dsn
        self._release = release
        self._handler: _TrackerHandler | None = None

    def install(self) -> None:
        """Start the tracker's client and capture every error event from now on."""
        sdk = self._sdk
        from sentry_sdk.integrations.argv import ArgvIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration

        try:
            sdk.init(
                dsn=self._dsn,
                release=self._release,
                # Only what the handler below sends: no log breadcrumbs, no events
                # made from log records by the SDK itself (they would lack the context).
                integrations=[LoggingIntegration(level=None, event_level=None)],
                # The command line may hold a database URL with its password.
                disabled_integrations=[ArgvIntegration()],
                auto_enabling_integrations=False,
                include_local_variables=False,  # a frame's locals may hold a body or token
                send_default_pii=False,
                max_request_body_size="never",
                max_breadcrumbs=0,
                before_send=_before_send,
                shutdown_timeout=FLUSH_TIMEOUT,
            )
        except Exception as exc:  # BadDsn and the like
            raise ErrorTrackingUnavailable(f"--sentry-dsn is not a usable DSN: {exc}") from None
        self._handler = _TrackerHandler(sdk)
        logging.getLogger().addHandler(self._handler)

    def close(self) -> None:
        if self._handler is None:
            return
        logging.getLogger().removeHandler(self._handler)
        self._handler = None
        client = self._sdk.get_client()
        client.flush(timeout=FLUSH_TIMEOUT)
        client.close(timeout=FLUSH_TIMEOUT)


class _TrackerHandler(logging.Handler):
    """Sends each record at ERROR or above that carries an exception, with its request
    context and user, as one tracker event."""

    def __init__(self, sdk: ModuleType) -> None:
        super().__init__(logging.ERROR)
        self._sdk = sdk

    def emit(self, record: logging.LogRecord) -> None:
        if not record.exc_info or record.exc_info[1] is None:
            return
        try:
            self._capture(record)
        except Exception:  # the tracker must never cost the server
            self.handleError(record)

    def _capture(self, record: logging.LogRecord) -> None:
        assert record.exc_info is not None and record.exc_info[1] is not None
        exc = record.exc_info[1]
        raw = getattr(record, "fields", None)
        fields: dict[str, object] = dict(raw) if isinstance(raw, Mapping) else {}
        user_id = fields.pop("user_id", None)
        context = {name: fields.pop(name) for name in _CONTEXT_FIELDS if name in fields}
        with self._sdk.new_scope() as scope:
            event = record.getMessage()
            scope.set_tag("event", event)
            scope.set_tag("logger", record.name)
            scope.set_tag("exc_type", exception_type(exc))
            if "route" in context:
                scope.set_tag("route", str(context["route"]))
            if user_id is not None:
                scope.set_user({"id": str(user_id)})
            if context:
                scope.set_context("request", context)
            for name, value in fields.items():
                scope.set_extra(name, clean_value(value))  # bounded like a log field
            scope.set_level("fatal" if record.levelno >= logging.CRITICAL else "error")
            scope.fingerprint = ["{{ default }}", event]
            self._sdk.capture_exception(record.exc_info)


def load(dsn: str | None, release: str) -> ErrorTracker | None:
    """The tracker for ``dsn`` (not installed yet), or None without one.

    Raises:
        SentryMissing: sentry-sdk is not installed.
    """
    if dsn is None:
        return None
    try:
        import sentry_sdk
    except ImportError:
        raise SentryMissing(
            "--sentry-dsn needs its extra: pip install 'libchat[sentry]'"
        ) from None
    return ErrorTracker(sentry_sdk, dsn, release)

