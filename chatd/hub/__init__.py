"""The hub: who is online on which connections, and everything that moves between them.

A user may be connected from several devices; every connection of a user gets every
push. The hub authenticates hellos, accepts sends (rate limit, recipient, store commit,
then ack and push), streams catch-up, records delivered and read marks and sends their
receipts, forwards typing, and pushes presence. It never touches sockets: it talks to
:class:`Session` objects (one per WebSocket, implemented by ``chatd.net``).

:class:`Hub` (in :mod:`chatd.hub.dispatch`) routes frames to the parts; see there.
"""

from chatd.hub.bridge import Publisher
from chatd.hub.dispatch import Hub
from chatd.hub.online import Session
from chatd.hub.sessions import Sessions

__all__ = ["Hub", "Publisher", "Session", "Sessions"]
