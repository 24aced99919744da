"""An HTTP answer as the host hands it to the engine."""

from __future__ import annotations

import attrs

from libchat.protocol import ErrorBody


@attrs.frozen
class Reply:
    status: int
    body: object = None  # a protocol body, raw bytes, or None
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"

    @classmethod
    def error(cls, status: int, code: str, message: str, **headers: str) -> Reply:
        """An error reply; keyword headers use ``_`` for ``-`` (``Retry_After="3"``)."""
        pairs = tuple((name.replace("_", "-"), value) for name, value in headers.items())
        return cls(status, ErrorBody.of(code, message), pairs)


UNAUTHORIZED = Reply.error(401, "unauthorized", "missing, invalid, expired or revoked token")
