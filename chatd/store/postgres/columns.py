"""The column lists the PostgreSQL store's queries share."""

from __future__ import annotations

from typing import Final

__all__ = ["MESSAGE_SELECT", "USER_COLUMNS", "message_select"]

USER_COLUMNS: Final = "id, username, password_hash, disabled, token_generation, created_at"
# A message row joined with both usernames, in the order message_from_row() reads.
MESSAGE_SELECT: Final = """
    SELECT {extra}m.client_id, m.seq, s.username, r.username, m.body, m.ts,
        m.delivered_at, m.read_at
    FROM {source} m
    JOIN users s ON s.id = m.sender_id
    JOIN users r ON r.id = m.recipient_id
"""


def message_select(source: str = "messages", extra: str = "") -> str:
    """SELECT ... FROM ``source`` with the usernames; ``extra`` columns come first."""
    return MESSAGE_SELECT.format(source=source, extra=extra)
