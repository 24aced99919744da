"""Protocol 1.0 types: every WebSocket frame and HTTP body, and their JSON codec.

Each type is a frozen, slotted, keyword-only attrs class validated when built, so an
instance is always a well-formed protocol value. The same class is sent and received.
JSON goes through one cattrs converter (orjson preconf) made strict: a field of the
wrong JSON type is an error, never silently coerced.

Decoding never raises anything but :class:`ProtocolViolation`, which carries the
contract's error code (``invalid_frame``, ``too_long``, ...) and, where the frame had
one, the client message id to echo back as ``ref``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final, TypeVar

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter
from cattrs.v import format_exception

from libchat import limits

__all__ = [
    "CLIENT_FRAMES",
    "SERVER_FRAMES",
    "Ack",
    "ClientFrame",
    "Conversation",
    "ConversationList",
    "Credentials",
    "Delivered",
    "DeliveredReceipt",
    "Error",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "Hello",
    "Message",
    "MessagePage",
    "PeerTyping",
    "Presence",
    "ProtocolViolation",
    "Read",
    "ReadReceipt",
    "Reauth",
    "Reauthed",
    "RefreshOptions",
    "Registered",
    "Send",
    "ServerFrame",
    "TokenGrant",
    "Typing",
    "UserEntry",
    "UserList",
    "Welcome",
    "decode_body",
    "decode_client_frame",
    "decode_response_body",
    "decode_server_frame",
    "encode_body",
    "encode_frame",
    "is_valid_username",
    "normalize_username",
    "peek_type",
]


class ProtocolViolation(Exception):
    """A peer sent something the contract does not allow.

    ``code`` is the contract's snake_case error code; ``ref`` the offending frame's
    client message id when it had a usable one.
    """

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


# --- field validators ---------------------------------------------------------------

CLIENT_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
USERNAME_RE: Final = re.compile(r"[a-z0-9_.-]{3,32}")


def normalize_username(name: str) -> str:
    """The stored form of a username: usernames compare case-insensitively."""
    return name.lower()


def is_valid_username(name: str) -> bool:
    return USERNAME_RE.fullmatch(name) is not None


def _client_id(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if CLIENT_ID_RE.fullmatch(value) is None:
        raise ProtocolViolation("invalid_frame", "id must be 1..64 of A-Z a-z 0-9 _ -")


def _body(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ProtocolViolation("empty_body", "the message body is empty")
    if len(value) > limits.MAX_MESSAGE_CHARS:
        raise ProtocolViolation(
            "too_long", f"the body is over {limits.MAX_MESSAGE_CHARS} characters"
        )
    if "\x00" in value:  # no text needs it, and PostgreSQL text cannot hold it
        raise ProtocolViolation("invalid_frame", "the body must not contain U+0000")


# Every integer the protocol carries is in 0.._MAX_INT: never negative, and small enough
# for a signed 64-bit store column (a bigger one would pass validation and then fail in
# the store's bind). Compared inline where it runs per integer of a frame.
_MAX_INT: Final = limits.MAX_WIRE_INT


def _wire_int(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= _MAX_INT:
        raise ProtocolViolation("invalid_frame", f"{attr.name} must be an integer 0..{_MAX_INT}")


def _non_empty(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ProtocolViolation("invalid_frame", f"{attr.name} must not be empty")


# Typed converters: attrs' mypy plugin takes an ``__init__`` parameter's type from its
# converter, and the bare ``tuple`` would leave it unresolved for callers.
def _ints(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)


def _seqs(_inst: object, _attr: attrs.Attribute[tuple[int, ...]], value: tuple[int, ...]) -> None:
    if not value:
        raise ProtocolViolation("invalid_frame", "seqs must not be empty")
    if len(value) > limits.MAX_SEQS_PER_DELIVERED:
        raise ProtocolViolation(
            "invalid_frame", f"at most {limits.MAX_SEQS_PER_DELIVERED} seqs per frame"
        )
    if min(value) < 0 or max(value) > _MAX_INT:
        raise ProtocolViolation("invalid_frame", f"seqs must be integers 0..{_MAX_INT}")


def _lower(value: str) -> str:
    return value.lower()


# --- trusted construction ----------------------------------------------------------------

# ``trusted()`` on the frames a server builds per message (Message, Ack, DeliveredReceipt):
# the instance ``cls(...)`` would make, its fields set directly, without the validators
# or the class call, for values that are valid already (they came from the server's own
# store, which took them from validated frames). Never for what a peer sent: decoding
# builds through the validating ``__init__``, or, for the send and delivered frames,
# sets the fields only once it has made the same checks by hand (``_fast_send``,
# ``_fast_delivered`` below). Per instance (bench/test_micro.py
# test_build_frame, min): Message 1.5 -> 0.9 us, Ack 1.0 -> 0.45 us, DeliveredReceipt
# 0.6 -> 0.45 us. tests/libchat/test_protocol_types.py holds each to ``cls(...)`` with
# hypothesis.
_new: Final = object.__new__
_set: Final = object.__setattr__  # what attrs' own __init__ of a frozen class uses


# --- the message object, shared by pushes and HTTP pages ------------------------------


@attrs.frozen(kw_only=True)
class Message:
    """A stored message: ``{"id","seq","from","to","body","ts","delivered_at","read_at"}``.

    ``sender`` and ``recipient`` travel as ``from`` and ``to``. On the wire a push is
    this object with ``"type": "message"`` added.
    """

    TYPE: ClassVar[str] = "message"
    id: str = attrs.field(validator=_client_id)
    seq: int = attrs.field(validator=_wire_int)
    sender: str
    recipient: str
    body: str
    ts: int
    delivered_at: int | None = None
    read_at: int | None = None

    @classmethod
    def trusted(
        cls,
        *,
        id: str,
        seq: int,
        sender: str,
        recipient: str,
        body: str,
        ts: int,
        delivered_at: int | None = None,
        read_at: int | None = None,
    ) -> Message:
        """``Message(...)`` without the validators, for values already valid (a
        server's own store); see "trusted construction" above."""
        self = _new(cls)
        _set(self, "id", id)
        _set(self, "seq", seq)
        _set(self, "sender", sender)
        _set(self, "recipient", recipient)
        _set(self, "body", body)
        _set(self, "ts", ts)
        _set(self, "delivered_at", delivered_at)
        _set(self, "read_at", read_at)
        return self


# --- client -> server frames -----------------------------------------------------------


@attrs.frozen(kw_only=True)
class Hello:
    TYPE: ClassVar[str] = "hello"
    protocol: str = attrs.field(validator=_non_empty)
    token: str | None = None


@attrs.frozen(kw_only=True)
class Send:
    TYPE: ClassVar[str] = "send"
    id: str = attrs.field(validator=_client_id)
    to: str = attrs.field(converter=_lower, validator=_non_empty)
    body: str = attrs.field(validator=_body)


@attrs.frozen(kw_only=True)
class Delivered:
    TYPE: ClassVar[str] = "delivered"
    seqs: tuple[int, ...] = attrs.field(converter=_ints, validator=_seqs)


@attrs.frozen(kw_only=True)
class Read:
    TYPE: ClassVar[str] = "read"
    peer: str = attrs.field(converter=_lower, validator=_non_empty)
    up_to: int = attrs.field(validator=_wire_int)


@attrs.frozen(kw_only=True)
class Typing:
    TYPE: ClassVar[str] = "typing"
    to: str = attrs.field(converter=_lower, validator=_non_empty)


@attrs.frozen(kw_only=True)
class Reauth:
    TYPE: ClassVar[str] = "reauth"
    token: str = attrs.field(validator=_non_empty)


ClientFrame = Hello | Send | Delivered | Read | Typing | Reauth
CLIENT_FRAMES: Final[Mapping[str, type[Any]]] = {
    cls.TYPE: cls for cls in (Hello, Send, Delivered, Read, Typing, Reauth)
}

# --- server -> client frames -----------------------------------------------------------


def negotiated_version(spoken: str) -> str:
    """The version to welcome a client with that said ``spoken`` (``"1.0"``, ``"1.1"``,
    ``"1.7"``) in its hello, whose major the engine already checked: the newest build of
    the lower of the two minors."""
    _, _, rest = spoken.partition(".")
    minor_text = rest.partition(".")[0]
    minor = int(minor_text) if minor_text.isdigit() else 0
    return limits.PROTOCOL_VERSIONS[min(minor, len(limits.PROTOCOL_VERSIONS) - 1)]


@attrs.frozen(kw_only=True)
class Welcome:
    TYPE: ClassVar[str] = "welcome"
    user_id: int
    username: str
    protocol: str = limits.PROTOCOL_VERSION
    server_time: int


@attrs.frozen(kw_only=True)
class Ack:
    TYPE: ClassVar[str] = "ack"
    id: str = attrs.field(validator=_client_id)
    seq: int = attrs.field(validator=_wire_int)
    ts: int

    @classmethod
    def trusted(cls, *, id: str, seq: int, ts: int) -> Ack:
        """``Ack(...)`` without the validators, for values already valid (a server's
        own store); see "trusted construction" above."""
        self = _new(cls)
        _set(self, "id", id)
        _set(self, "seq", seq)
        _set(self, "ts", ts)
        return self


@attrs.frozen(kw_only=True)
class DeliveredReceipt:
    """``{"type": "receipt", "status": "delivered", "id", "seq", "ts"}``."""

    TYPE: ClassVar[str] = "receipt"
    STATUS: ClassVar[str] = "delivered"
    id: str
    seq: int
    ts: int

    @classmethod
    def trusted(cls, *, id: str, seq: int, ts: int) -> DeliveredReceipt:
        """``DeliveredReceipt(...)`` without the class call (it has no validators), for
        values already valid (a server's own store); see "trusted construction" above."""
        self = _new(cls)
        _set(self, "id", id)
        _set(self, "seq", seq)
        _set(self, "ts", ts)
        return self


@attrs.frozen(kw_only=True)
class ReadReceipt:
    """``{"type": "receipt", "status": "read", "peer", "up_to", "ts"}``."""

    TYPE: ClassVar[str] = "receipt"
    STATUS: ClassVar[str] = "read"
    peer: str
    up_to: int
    ts: int


@attrs.frozen(kw_only=True)
class PeerTyping:
    """The forwarded typing signal: ``{"type": "typing", "from": <username>}``."""

    TYPE: ClassVar[str] = "typing"
    sender: str


@attrs.frozen(kw_only=True)
class Presence:
    TYPE: ClassVar[str] = "presence"
    user: str
    online: bool


@attrs.frozen(kw_only=True)
class Reauthed:
    TYPE: ClassVar[str] = "reauthed"
    expires_in: int


@attrs.frozen(kw_only=True)
class Error:
    """An error frame. ``ref`` echoes the offending frame's id; optional fields are
    left out of the JSON when unset."""

    TYPE: ClassVar[str] = "error"
    code: str = attrs.field(validator=_non_empty)
    message: str | None = None
    ref: str | None = None
    retry_after_ms: int | None = None


ServerFrame = (
    Welcome
    | Ack
    | Message
    | DeliveredReceipt
    | ReadReceipt
    | PeerTyping
    | Presence
    | Reauthed
    | Error
)
SERVER_FRAMES: Final[Mapping[str, type[Any]]] = {
    cls.TYPE: cls for cls in (Welcome, Ack, Message, PeerTyping, Presence, Reauthed, Error)
}
_RECEIPTS: Final[Mapping[str, type[Any]]] = {
    DeliveredReceipt.STATUS: DeliveredReceipt,
    ReadReceipt.STATUS: ReadReceipt,
}

# --- HTTP bodies -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Credentials:
    """Body of ``POST /v1/register`` and ``POST /v1/login``."""

    username: str
    password: str


@attrs.frozen(kw_only=True)
class Registered:
    user_id: int
    username: str


@attrs.frozen(kw_only=True)
class RefreshOptions:
    """Optional body of ``POST /v1/token/refresh`` (protocol 1.1). ``rotate``: retire the
    presented token once the refresh's grace period has passed; without it (or without a
    body) the old token stays valid until it expires, as in 1.0."""

    rotate: bool = False


@attrs.frozen(kw_only=True)
class TokenGrant:
    """Answer to a login or a token refresh."""

    token: str
    token_type: str = "Bearer"
    expires_in: int
    user_id: int
    username: str


@attrs.frozen(kw_only=True)
class UserEntry:
    username: str


def _user_entries(values: Iterable[UserEntry]) -> tuple[UserEntry, ...]:
    return tuple(values)


def _conversations(values: Iterable[Conversation]) -> tuple[Conversation, ...]:
    return tuple(values)


def _messages(values: Iterable[Message]) -> tuple[Message, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class UserList:
    users: tuple[UserEntry, ...] = attrs.field(converter=_user_entries)


@attrs.frozen(kw_only=True)
class Conversation:
    peer: str
    last_message: Message
    unread: int


@attrs.frozen(kw_only=True)
class ConversationList:
    conversations: tuple[Conversation, ...] = attrs.field(converter=_conversations)


@attrs.frozen(kw_only=True)
class MessagePage:
    messages: tuple[Message, ...] = attrs.field(converter=_messages)
    has_more: bool


@attrs.frozen(kw_only=True)
class Health:
    status: str
    version: str
    protocol: str
    uptime_s: float
    connections: int
    db: str
    disk_used_pct: float


@attrs.frozen(kw_only=True)
class ErrorDetail:
    code: str
    message: str


@attrs.frozen(kw_only=True)
class ErrorBody:
    """``{"error": {"code", "message"}}``: the body of every HTTP error response."""

    error: ErrorDetail

    @classmethod
    def of(cls, code: str, message: str) -> ErrorBody:
        return cls(error=ErrorDetail(code=code, message=message))


# --- the converter -----------------------------------------------------------------------


def _make_converter() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=False)

    def exact(kind: type[Any]) -> Callable[[Any, Any], Any]:
        def structure(value: Any, _: Any) -> Any:
            if type(value) is not kind:
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
            return value

        return structure

    for kind in (str, bool):
        conv.register_structure_hook(kind, exact(kind))

    def integer(value: Any, _: Any) -> int:
        # Every integer field, both directions: never a bool, and in the wire range.
        if type(value) is not int:
            raise TypeError(f"expected int, got {type(value).__name__}")
        if not 0 <= value <= _MAX_INT:
            raise _OutOfRange(f"must be an integer 0..{_MAX_INT}")
        return value

    conv.register_structure_hook(int, integer)

    def number(value: Any, _: Any) -> float:
        if type(value) not in (int, float):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        return float(value)

    conv.register_structure_hook(float, number)

    # ``from`` is a Python keyword: the attrs fields are ``sender``/``recipient``.
    wire_from, wire_to = override(rename="from"), override(rename="to")
    conv.register_structure_hook(
        Message, make_dict_structure_fn(Message, conv, sender=wire_from, recipient=wire_to)
    )
    conv.register_unstructure_hook(
        Message, make_dict_unstructure_fn(Message, conv, sender=wire_from, recipient=wire_to)
    )
    conv.register_structure_hook(
        PeerTyping, make_dict_structure_fn(PeerTyping, conv, sender=wire_from)
    )
    conv.register_unstructure_hook(
        PeerTyping, make_dict_unstructure_fn(PeerTyping, conv, sender=wire_from)
    )
    conv.register_unstructure_hook(
        Error, make_dict_unstructure_fn(Error, conv, _cattrs_omit_if_default=True)
    )
    return conv


converter: Final = _make_converter()
T = TypeVar("T")


def _ref_of(data: Mapping[str, Any]) -> str | None:
    ref = data.get("id")
    if isinstance(ref, str) and CLIENT_ID_RE.fullmatch(ref):
        return ref
    return None


def _structure(data: Mapping[str, Any], cls: type[T]) -> T:
    try:
        return converter.structure(data, cls)
    except ProtocolViolation:
        raise
    except cattrs.BaseValidationError as exc:
        # attrs validators raise ProtocolViolation inside cattrs' exception group.
        for inner in _leaves(exc):
            if isinstance(inner, ProtocolViolation):
                raise inner from None
        raise ProtocolViolation("invalid_frame", _describe(exc)) from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ProtocolViolation("invalid_frame", str(exc) or type(exc).__name__) from None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in exc.exceptions:
            found.extend(_leaves(inner))
        return found
    return [exc]


class _OutOfRange(ValueError):
    """An integer outside the wire range; its text is the note for the field's path."""


def _note(exc: BaseException, kind: type | None) -> str:
    return str(exc) if isinstance(exc, _OutOfRange) else format_exception(exc, kind)


def _describe(exc: cattrs.BaseValidationError) -> str:
    notes = cattrs.transform_error(exc, format_exception=_note)
    return "; ".join(notes) if notes else "malformed frame"


def _load_object(data: bytes | str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolViolation("invalid_frame", "not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolViolation("invalid_frame", "a frame must be a JSON object")
    return value


def _frame_class(data: Mapping[str, Any], table: Mapping[str, type[Any]]) -> type[Any]:
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolViolation("invalid_frame", "missing type", _ref_of(data))
    cls = table.get(kind)
    if cls is None:
        raise ProtocolViolation("invalid_frame", f"unknown type {kind[:40]!r}", _ref_of(data))
    return cls


def peek_type(data: bytes | str) -> str | None:
    """The ``type`` of a frame that may be malformed otherwise, or None when the text is
    not a JSON object with a string ``type``. Never raises."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


# The frames a client sends for every message (the send, the delivered confirmation),
# checked by hand: the same checks as the converter's hooks and the classes' validators,
# in one pass over the decoded dict, and the instance set up like ``trusted()`` does.
# Anything the hand check does not accept (a wrong type, a missing key, a value out of
# range) takes the generic path, which raises the violation. Per frame (bench/test_micro.py
# test_decode_client_frame, min): send 5.3 -> 2.0 us, delivered 3.3 -> 1.4 us.
# tests/libchat/test_protocol_types.py holds both to the generic path with hypothesis.
def _fast_send(obj: dict[str, Any]) -> Send | None:
    msg_id, to, body = obj.get("id"), obj.get("to"), obj.get("body")
    if (
        type(msg_id) is not str
        or CLIENT_ID_RE.fullmatch(msg_id) is None
        or type(to) is not str
        or not to
        or type(body) is not str
        or not body
        or len(body) > limits.MAX_MESSAGE_CHARS
        or "\x00" in body
    ):
        return None
    frame = _new(Send)
    _set(frame, "id", msg_id)
    _set(frame, "to", to.lower())
    _set(frame, "body", body)
    return frame


def _fast_delivered(obj: dict[str, Any]) -> Delivered | None:
    seqs = obj.get("seqs")
    if type(seqs) is not list or not 0 < len(seqs) <= limits.MAX_SEQS_PER_DELIVERED:
        return None
    for seq in seqs:
        if type(seq) is not int or not 0 <= seq <= _MAX_INT:
            return None
    frame = _new(Delivered)
    _set(frame, "seqs", tuple(seqs))
    return frame


_FAST_DECODERS: Final[Mapping[str, Callable[[dict[str, Any]], ClientFrame | None]]] = {
    "send": _fast_send,
    "delivered": _fast_delivered,
}


def decode_client_frame(data: bytes | str) -> ClientFrame:
    """Parse one text frame a client sent. Raises :class:`ProtocolViolation` only."""
    obj = _load_object(data)
    kind = obj.get("type")  # any JSON value: a list or an object is no key
    fast = _FAST_DECODERS.get(kind) if type(kind) is str else None
    if fast is not None and (done := fast(obj)) is not None:
        return done
    return _decode_client_generic(obj)


def _decode_client_generic(obj: dict[str, Any]) -> ClientFrame:
    """:func:`decode_client_frame` through the converter: every frame the fast decoders
    do not take, and the reference they are tested against."""
    cls = _frame_class(obj, CLIENT_FRAMES)
    try:
        frame: ClientFrame = _structure(obj, cls)
    except ProtocolViolation as exc:
        exc.ref = exc.ref or _ref_of(obj)
        raise
    return frame


def decode_server_frame(data: bytes | str) -> ServerFrame:
    """Parse one text frame a server sent. Raises :class:`ProtocolViolation` only."""
    obj = _load_object(data)
    if obj.get("type") == "receipt":
        status = obj.get("status")
        cls = _RECEIPTS.get(status) if isinstance(status, str) else None
        if cls is None:
            raise ProtocolViolation("invalid_frame", "unknown receipt status")
    else:
        cls = _frame_class(obj, SERVER_FRAMES)
    frame: ServerFrame = _structure(obj, cls)
    return frame


# The frames a server writes for every message (the ack and the delivered receipt to the
# sender, the push to the recipient), as the dict the generic path below makes of them,
# built by hand: the same keys in the same order, every value as it is (the converter's
# hooks for these fields are the identity, and a Message's unset optional fields are
# written as null, not left out), so the same bytes. tests/libchat/test_protocol_types.py
# holds them to the generic path with hypothesis. About half the time: encode_frame
# (bench/test_micro.py test_encode_frame, min) ack 1.07 -> 0.46 us, push 1.30 -> 0.66 us,
# receipt 1.07 -> 0.53 us. Looked up by exact type: a subclass takes the generic path.
_HOT_FRAMES: Final[Mapping[type[Any], Callable[[Any], dict[str, Any]]]] = {
    Ack: lambda f: {"type": "ack", "id": f.id, "seq": f.seq, "ts": f.ts},
    Message: lambda f: {
        "type": "message",
        "id": f.id,
        "seq": f.seq,
        "from": f.sender,
        "to": f.recipient,
        "body": f.body,
        "ts": f.ts,
        "delivered_at": f.delivered_at,
        "read_at": f.read_at,
    },
    DeliveredReceipt: lambda f: {
        "type": "receipt",
        "status": "delivered",
        "id": f.id,
        "seq": f.seq,
        "ts": f.ts,
    },
}


def encode_frame(frame: ClientFrame | ServerFrame) -> str:
    """The JSON text of one frame, ``type`` first."""
    hot = _HOT_FRAMES.get(type(frame))
    if hot is not None:
        return orjson.dumps(hot(frame)).decode()
    return _encode_generic(frame)


def _encode_generic(frame: ClientFrame | ServerFrame) -> str:
    """:func:`encode_frame` through the converter: every frame but the hot ones, and the
    reference the hot ones are tested against."""
    out: dict[str, Any] = {"type": frame.TYPE}
    status = getattr(frame, "STATUS", None)
    if status is not None:
        out["status"] = status
    out.update(converter.unstructure(frame))
    return orjson.dumps(out).decode()


def encode_body(body: Any) -> bytes:
    """The JSON bytes of one HTTP body."""
    return orjson.dumps(converter.unstructure(body))


def decode_body(data: bytes | str, cls: type[T]) -> T:
    """Parse one HTTP body into ``cls``. Raises :class:`ProtocolViolation` with code
    ``invalid_body`` only."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolViolation("invalid_body", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolViolation("invalid_body", "the body must be a JSON object")
    try:
        return _structure(value, cls)
    except ProtocolViolation as exc:
        raise ProtocolViolation("invalid_body", exc.message) from None


def decode_response_body(data: bytes | str, cls: type[T]) -> T:
    """Parse one HTTP response body a server sent (the client side's twin of
    :func:`decode_body`, kept apart so tests can check every server body on arrival)."""
    return decode_body(data, cls)
