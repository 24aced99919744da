"""The bus events the PostgreSQL store sends itself, by NOTIFY in the statement that
commits what they announce: MessageStored from the message insert, Delivered from the
delivered marks (:mod:`chatd.bus.events` has their payload format; these build the same
JSON in SQL). The other nodes hear them when the transaction commits, and the node pays
no separate publish per event.
"""

from __future__ import annotations

from typing import Final, Protocol

from chatd.bus.events import MAX_SEQS_PER_EVENT

__all__ = ["DELIVERED_TOLD", "MESSAGE_STORED", "Announcer"]


class Announcer(Protocol):
    """Where the notices go: the node's bus (:class:`chatd.bus.PostgresBus`)."""

    channel: str
    node_id: str
    others_listening: bool  # read per statement: nobody listening, nothing sent


# pg_notify of a MessageStored for a row ``i`` of messages, with ``s`` and ``r`` the
# sender's and recipient's users rows; parameters %(channel)s and %(node)s.
MESSAGE_STORED: Final = """pg_notify(%(channel)s, json_build_object(
    'k', 'm', 'n', %(node)s::text, 'recipient', r.username, 'seq', i.seq, 'sender', s.username
)::text)"""

# A CTE ``told`` sending a Delivered per sender of the rows of ``changed``, at most
# MAX_SEQS_PER_EVENT seqs each (NOTIFY's payload limit); same parameters. It runs only
# if the statement reads it.
DELIVERED_TOLD: Final = f"""told AS (
    SELECT pg_notify(%(channel)s, json_build_object(
        'k', 'd', 'n', %(node)s::text, 'sender', s.username,
        'seqs', json_agg(g.seq ORDER BY g.seq)
    )::text)
    FROM (
        SELECT sender_id, seq,
            (row_number() OVER (PARTITION BY sender_id ORDER BY seq) - 1)
                / {MAX_SEQS_PER_EVENT} AS part
        FROM changed
    ) AS g
    JOIN users s ON s.id = g.sender_id
    GROUP BY s.username, g.part
)"""
