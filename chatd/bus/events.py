"""The bus events and their NOTIFY payload codec: what one chatd node tells the others.

Events carry ids only, never bodies. :func:`encode_piece` makes an event's compact JSON
(its type tag as ``"k"``, then its fields); a payload carries one, with the publishing
node as ``"n"`` (:func:`single_payload`, :func:`encode_event`), or several
(``{"n": node, "e": [event, ...]}``, :func:`pack_pieces`): one notification for a send's
worth of events rather than one per event, for nodes that all read it
(``chatd.bus.postgres``). :func:`decode_payload` reads both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import attrs
import orjson

from chatd.store.base import Retirement

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "BusEvent",
    "Delivered",
    "FamilyRevoked",
    "MessageStored",
    "NodeHere",
    "NodeJoined",
    "PeersOnline",
    "Presence",
    "ReadUpTo",
    "StoreChanged",
    "TokenRetired",
    "TokenRevoked",
    "Typing",
    "UserRevoked",
    "decode_event",
    "decode_payload",
    "encode_event",
    "encode_piece",
    "pack_pieces",
    "piece_room",
    "single_payload",
    "split_event",
]

MAX_PAYLOAD_BYTES: Final = 7900  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more
MAX_SEQS_PER_EVENT: Final = 300  # 300 seqs of up to 19 digits stay well under the payload cap
MAX_NAMES_PER_EVENT: Final = 150  # 150 usernames of up to 32 characters (JSON-escaped) too


@attrs.frozen(kw_only=True)
class MessageStored:
    """A message was committed: push it to the recipient and the sender's other devices."""

    recipient: str
    seq: int
    sender: str


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Delivered:
    """The recipient confirmed these seqs: send ``sender`` its delivered receipts."""

    sender: str
    seqs: tuple[int, ...] = attrs.field(converter=_as_tuple)


@attrs.frozen(kw_only=True)
class ReadUpTo:
    """``reader`` read ``peer``'s messages up to ``up_to``: send ``peer`` a read receipt."""

    reader: str
    peer: str
    up_to: int
    ts: int


@attrs.frozen(kw_only=True)
class Typing:
    sender: str
    to: str


@attrs.frozen(kw_only=True)
class Presence:
    """``user`` came online (first connection anywhere) or went offline (last one)."""

    user: str
    online: bool


@attrs.frozen(kw_only=True)
class PeersOnline:
    """These conversation peers of ``user`` are online on the publishing node (the
    nodes holding ``user`` tell its connections): the answer to ``user`` coming online
    on another node, or to its first message to one of them."""

    user: str
    peers: tuple[str, ...] = attrs.field(converter=_as_tuple)


@attrs.frozen(kw_only=True)
class TokenRevoked:
    """A logout: close the connections that authenticated with token ``jti``."""

    jti: str
    expires_at: int  # Unix s: the revocation cache may forget it afterwards


@attrs.frozen(kw_only=True)
class TokenRetired:
    """A rotating refresh: token ``jti`` closes its connections when its grace ends."""

    jti: str
    family: str
    expires_at: int
    grace_until: float

    @classmethod
    def of(cls, retirement: Retirement) -> TokenRetired:
        return cls(jti=retirement.jti, family=retirement.family,
                   expires_at=retirement.expires_at, grace_until=retirement.grace_until)

    def retirement(self) -> Retirement:
        return Retirement(jti=self.jti, family=self.family, expires_at=self.expires_at,
                          grace_until=self.grace_until)


@attrs.frozen(kw_only=True)
class FamilyRevoked:
    """A retired token was reused: close every connection of the tokens of ``family``."""

    family: str
    expires_at: int


@attrs.frozen(kw_only=True)
class UserRevoked:
    """Password change or disable: close ``username``'s connections with older tokens."""

    username: str
    generation: int


@attrs.frozen(kw_only=True)
class StoreChanged:
    """Another process (``chatd user ...``, another node) committed a user change, a
    token revocation or a new keyring: look at the store now instead of at the next
    poll. Sent by the PostgreSQL store in the transaction of the change itself."""


@attrs.frozen(kw_only=True)
class NodeJoined:
    """A node began listening (it starts, or its listener reconnected): a node that
    stopped publishing because nobody listened publishes again (the bus's own event)."""


@attrs.frozen(kw_only=True)
class NodeHere:
    """The answer of a node that published nothing until ``to`` joined: ``to`` may
    have missed events, so it resyncs (the bus's own event)."""

    to: str


BusEvent = (
    MessageStored
    | Delivered
    | ReadUpTo
    | Typing
    | Presence
    | PeersOnline
    | TokenRevoked
    | TokenRetired
    | FamilyRevoked
    | UserRevoked
    | StoreChanged
    | NodeJoined
    | NodeHere
)

# One short tag per event type, on the wire as "k"; the publishing node travels as "n".
_TAGS: Final[dict[type[Any], str]] = {
    MessageStored: "m",
    Delivered: "d",
    ReadUpTo: "r",
    Typing: "t",
    Presence: "p",
    PeersOnline: "o",
    TokenRevoked: "x",
    TokenRetired: "y",
    FamilyRevoked: "f",
    UserRevoked: "u",
    StoreChanged: "c",
    NodeJoined: "j",
    NodeHere: "h",
}
_CLASSES: Final[dict[str, type[Any]]] = {tag: cls for cls, tag in _TAGS.items()}


def encode_piece(event: BusEvent) -> bytes:
    """``event`` as the JSON object a payload carries: ``{"k": tag, field: value...}``."""
    return orjson.dumps({"k": _TAGS[type(event)], **attrs.asdict(event)})


def single_payload(piece: bytes, node_id: str) -> str:
    """The NOTIFY payload of one event (a piece from :func:`encode_piece`), which nodes
    of every version read: the piece with the node id as ``"n"``.

    Raises:
        ValueError: the payload would be too large for NOTIFY (split the event first).
    """
    payload = b'{"n":' + orjson.dumps(node_id) + b"," + piece[1:]
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"bus payload of {len(payload)} bytes is over the NOTIFY limit")
    return payload.decode()


def encode_event(event: BusEvent, node_id: str) -> str:
    """The NOTIFY payload of ``event`` alone (see :func:`single_payload`)."""
    return single_payload(encode_piece(event), node_id)


def _packed_head(node_id: str) -> bytes:
    return b'{"n":' + orjson.dumps(node_id) + b',"e":['


def piece_room(node_id: str) -> int:
    """The largest piece a payload of ``node_id`` carries, alone or packed: a larger
    event must be split (:func:`split_event`) or refused."""
    return MAX_PAYLOAD_BYTES - len(_packed_head(node_id)) - 2  # "]}"


def pack_pieces(pieces: Sequence[bytes], node_id: str) -> list[str]:
    """The payloads carrying ``pieces`` (from :func:`encode_piece`) in order, as many in
    each as fit one NOTIFY.

    Raises:
        ValueError: one piece alone is too large for NOTIFY (split its event first).
    """
    head = _packed_head(node_id)
    room = piece_room(node_id)
    payloads: list[str] = []
    run: list[bytes] = []
    used = 0
    for piece in pieces:
        if len(piece) > room:
            raise ValueError(f"bus event of {len(piece)} bytes is over the NOTIFY limit")
        if run and used + 1 + len(piece) > room:
            payloads.append((head + b",".join(run) + b"]}").decode())
            run, used = [], 0
        used += len(piece) + (1 if run else 0)
        run.append(piece)
    if run:
        payloads.append((head + b",".join(run) + b"]}").decode())
    return payloads


def decode_payload(
    payload: str | bytes, *, unless_from: str | None = None
) -> tuple[str, list[BusEvent]]:
    """``(node_id, events)`` from a payload made by :func:`single_payload` (one event)
    or :func:`pack_pieces` (several); no events when ``node_id`` is ``unless_from`` (a
    node hears its own notifications: it reads whose they are, and no further).

    Raises:
        ValueError: the payload is not one of ours.
    """
    try:
        data = orjson.loads(payload)
        node_id = data["n"]
        packed = data.get("e")
        if node_id == unless_from:
            events = []
        elif packed is None:
            events = [_event(data)]
        elif type(packed) is list:
            events = [_event(item) for item in packed]
        else:
            raise TypeError("the events are not a list")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a bus event: {exc}") from exc
    if not isinstance(node_id, str):
        raise ValueError("not a bus event: the node id is not a string")
    return node_id, events


def _event(data: dict[str, Any]) -> BusEvent:
    fields = dict(data)
    fields.pop("n", None)
    event: BusEvent = _CLASSES[fields.pop("k")](**fields)
    return event


def decode_event(payload: str | bytes) -> tuple[str, BusEvent]:
    """``(node_id, event)`` from a payload made by :func:`encode_event`.

    Raises:
        ValueError: the payload is not one of ours, or carries more than one event.
    """
    node_id, events = decode_payload(payload)
    if len(events) != 1:
        raise ValueError(f"not one bus event but {len(events)}")
    return node_id, events[0]


# The events that can grow past one NOTIFY: the field that grows, and its piece's size.
_SPLIT: Final[dict[type[Any], tuple[str, int]]] = {
    Delivered: ("seqs", MAX_SEQS_PER_EVENT),
    PeersOnline: ("peers", MAX_NAMES_PER_EVENT),
}


def split_event(event: BusEvent) -> Iterator[BusEvent]:
    """The event cut into pieces that each fit one NOTIFY (see :data:`_SPLIT`)."""
    split = _SPLIT.get(type(event))
    if split is None:
        yield event
        return
    field, size = split
    values: tuple[Any, ...] = getattr(event, field)
    if len(values) <= size:
        yield event
        return
    fields = attrs.asdict(event, recurse=False)
    for start in range(0, len(values), size):
        fields[field] = values[start : start + size]
        yield type(event)(**fields)
