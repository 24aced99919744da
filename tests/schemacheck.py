"""Check every frame and body that crosses libchat's codec against ``protocol/schemas/``.

The autouse fixture :func:`schema_check` (re-exported by ``tests/conftest.py``) replaces
four module attributes of :mod:`libchat.protocol` for the duration of each test:

* ``encode_frame`` and ``encode_body``: the output of every encode (either side) is
  validated against the schema of the encoded class;
* ``decode_server_frame`` and ``decode_response_body``: what a client receives from a
  server (an engine under test or a real chatd) is validated before it is decoded.

A violation raises :class:`SchemaViolation` (an ``AssertionError``) at the call and is
also recorded, so a violation raised where nobody sees it (an asyncio callback, a network
thread) still fails the test at teardown. Classes without a schema fail loudly.

A test that feeds deliberately bad server input to a client uses
``with schema_check.paused(): ...`` or ``@pytest.mark.schema_exempt(reason="...")``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from libchat import protocol
from tests.schemafast import Check, compile_schema

if TYPE_CHECKING:
    from referencing._core import Resolver  # not re-exported by referencing

SCHEMA_DIR: Final = Path(__file__).resolve().parents[1] / "protocol" / "schemas"
SCHEMA_BASE: Final = "https://libchat.example/protocol/1/"

# Class -> schema, as "<file>#<pointer>" relative to protocol/schemas/.
FRAME_SCHEMAS: Final[Mapping[type[Any], str]] = {
    protocol.Hello: "frames-client.json#/$defs/hello",
    protocol.Send: "frames-client.json#/$defs/send",
    protocol.Delivered: "frames-client.json#/$defs/delivered",
    protocol.Read: "frames-client.json#/$defs/read",
    protocol.Typing: "frames-client.json#/$defs/typing",
    protocol.Reauth: "frames-client.json#/$defs/reauth",
    protocol.Welcome: "frames-server.json#/$defs/welcome",
    protocol.Ack: "frames-server.json#/$defs/ack",
    protocol.Message: "message.json#/$defs/push",
    protocol.DeliveredReceipt: "frames-server.json#/$defs/receipt_delivered",
    protocol.ReadReceipt: "frames-server.json#/$defs/receipt_read",
    protocol.PeerTyping: "frames-server.json#/$defs/typing",
    protocol.Presence: "frames-server.json#/$defs/presence",
    protocol.Reauthed: "frames-server.json#/$defs/reauthed",
    protocol.Error: "frames-server.json#/$defs/error",
}
BODY_SCHEMAS: Final[Mapping[type[Any], str]] = {
    protocol.Credentials: "auth.json#/$defs/credentials",
    protocol.Registered: "auth.json#/$defs/registered",
    protocol.RefreshOptions: "auth.json#/$defs/refresh_options",
    protocol.TokenGrant: "auth.json#/$defs/token_grant",
    protocol.UserList: "users.json#/$defs/user_list",
    protocol.ConversationList: "conversation.json#/$defs/conversation_list",
    protocol.MessagePage: "conversation.json#/$defs/message_page",
    protocol.Health: "health.json",
    protocol.ErrorBody: "error.json",
}
SERVER_FRAMES_SCHEMA: Final = "frames-server.json"
CLIENT_FRAMES_SCHEMA: Final = "frames-client.json"
# (type, status) of a server frame on the wire -> its schema; status is None but for receipts.
SERVER_WIRE_SCHEMAS: Final[Mapping[tuple[str, str | None], str]] = {
    (cls.TYPE, getattr(cls, "STATUS", None)): ref
    for cls, ref in FRAME_SCHEMAS.items()
    if ref.startswith((SERVER_FRAMES_SCHEMA, "message.json"))
}

_MAX_SHOWN = 300  # characters of an offending value shown in a failure


class SchemaViolation(AssertionError):
    """A frame or body does not match its protocol schema."""


class SchemaSet:
    """Every schema in ``protocol/schemas/``, with one cached validator per reference."""

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.json")):
            self.documents[path.name] = orjson.loads(path.read_bytes())
        self.registry: Registry[Any] = Registry().with_resources(
            (doc["$id"], Resource.from_contents(doc, default_specification=DRAFT202012))
            for doc in self.documents.values()
        )
        self._validators: dict[str, Draft202012Validator] = {}
        self._fast: dict[str, Check] = {}

    def validator(self, ref: str) -> Draft202012Validator:
        """The validator of ``ref`` (``"<file>"`` or ``"<file>#<pointer>"``).

        Its schema has every ``$ref`` inlined: resolving references on each call made
        validation about three times slower, and these run on every frame of the suite.
        """
        found = self._validators.get(ref)
        if found is None:
            resolver = self.registry.resolver()
            found = Draft202012Validator(_inline({"$ref": SCHEMA_BASE + ref}, resolver))
            self._validators[ref] = found
        return found

    def reference_validator(self, ref: str) -> Draft202012Validator:
        """A validator of ``ref`` that resolves ``$ref`` through the registry, as any
        other JSON Schema tool would (slower; tests compare it with :meth:`validator`)."""
        return Draft202012Validator({"$ref": SCHEMA_BASE + ref}, registry=self.registry)

    def fast(self, ref: str) -> Check:
        """A compiled yes/no check of ``ref`` (see ``tests/schemafast.py``)."""
        found = self._fast.get(ref)
        if found is None:
            found = compile_schema(self.validator(ref).schema)
            self._fast[ref] = found
        return found

    def problem(self, instance: Any, ref: str) -> str | None:
        """``None`` when ``instance`` matches ``ref``, else a one-line description."""
        if self.fast(ref)(instance):
            return None
        validator = self.validator(ref)
        error = best_match(validator.iter_errors(instance))
        if error is None:  # jsonschema decides; test_examples keeps the two in agreement
            return None
        where = error.json_path
        text = error.message
        if len(text) > _MAX_SHOWN:
            text = text[:_MAX_SHOWN] + "..."
        return f"{where}: {text}"


# Dropped when inlining: references, and annotations that validation never looks at.
_NOT_INLINED: Final = frozenset(
    {"$ref", "$defs", "$id", "$schema", "$comment", "title", "description", "examples"}
)
_NAME_MAPS: Final = frozenset({"properties", "patternProperties", "dependentSchemas"})
_DATA: Final = frozenset({"const", "enum", "default"})


def _inline(node: Any, resolver: Resolver[Any]) -> Any:
    """The schema ``node`` with every ``$ref`` replaced by what it points to (our
    schemas have no recursive references). A ``$ref`` with sibling keywords becomes an
    ``allOf``."""
    if isinstance(node, list):
        return [_inline(item, resolver) for item in node]
    if not isinstance(node, dict):
        return node
    rest: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NOT_INLINED:
            continue
        if key in _DATA:
            rest[key] = value
        elif key in _NAME_MAPS:
            rest[key] = {name: _inline(sub, resolver) for name, sub in value.items()}
        else:
            rest[key] = _inline(value, resolver)
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return rest
    resolved = resolver.lookup(ref)
    target = _inline(resolved.contents, resolved.resolver)
    return {"allOf": [target, rest]} if rest else target


class SchemaChecker:
    """Validating stand-ins for the codec functions; records every violation."""

    def __init__(self, schemas: SchemaSet) -> None:
        self.schemas = schemas
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._paused = 0
        self._encode_frame = protocol.encode_frame
        self._encode_body = protocol.encode_body
        self._decode_server_frame = protocol.decode_server_frame
        self._decode_response_body = protocol.decode_response_body

    # --- control ----------------------------------------------------------------------

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Check nothing inside the block: for tests that feed deliberately bad input."""
        with self._lock:
            self._paused += 1
        try:
            yield
        finally:
            with self._lock:
                self._paused -= 1

    def take_violations(self) -> list[str]:
        """The violations recorded so far, forgetting them (so teardown will not fail)."""
        with self._lock:
            taken, self.violations = self.violations, []
        return taken

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(protocol, "encode_frame", self.encode_frame)
        monkeypatch.setattr(protocol, "encode_body", self.encode_body)
        monkeypatch.setattr(protocol, "decode_server_frame", self.decode_server_frame)
        monkeypatch.setattr(protocol, "decode_response_body", self.decode_response_body)

    # --- the stand-ins ----------------------------------------------------------------

    def encode_frame(self, frame: protocol.ClientFrame | protocol.ServerFrame) -> str:
        text = self._encode_frame(frame)
        if not self._paused:
            ref = self._schema_of(type(frame), FRAME_SCHEMAS, "encode_frame")
            self._check(orjson.loads(text), ref, f"encode_frame({type(frame).__name__})")
        return text

    def encode_body(self, body: Any) -> bytes:
        data = self._encode_body(body)
        if not self._paused:
            ref = self._schema_of(type(body), BODY_SCHEMAS, "encode_body")
            self._check(orjson.loads(data), ref, f"encode_body({type(body).__name__})")
        return data

    def decode_server_frame(self, data: bytes | str) -> protocol.ServerFrame:
        if not self._paused:
            self._check_server_frame(data)
        return self._decode_server_frame(data)

    def decode_response_body(self, data: bytes | str, cls: type[Any]) -> Any:
        if not self._paused:
            try:
                value = orjson.loads(data)
            except orjson.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                ref = self._schema_of(cls, BODY_SCHEMAS, "decode_response_body")
                self._check(value, ref, f"decode_response_body(<{cls.__name__} body>)")
        return self._decode_response_body(data, cls)

    # --- internals --------------------------------------------------------------------

    def _check_server_frame(self, data: bytes | str) -> None:
        what = "decode_server_frame(<frame from the server>)"
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._violation(
                f"{what}: the server sent a text frame that is not JSON"
            ) from None
        if not isinstance(value, dict):
            raise self._violation(f"{what}: the server sent a frame that is not a JSON object")
        kind = value.get("type")
        status = value.get("status") if kind == "receipt" else None
        ref = SERVER_FRAMES_SCHEMA  # the whole union: its errors name what is wrong
        if isinstance(kind, str) and (status is None or isinstance(status, str)):
            ref = SERVER_WIRE_SCHEMAS.get((kind, status), SERVER_FRAMES_SCHEMA)
        self._check(value, ref, what)

    def _schema_of(self, cls: type[Any], table: Mapping[type[Any], str], where: str) -> str:
        ref = table.get(cls)
        if ref is None:
            raise self._violation(
                f"{where}: no schema is mapped for {cls.__qualname__} (see tests/schemacheck.py)"
            )
        return ref

    def _check(self, instance: Any, ref: str, what: str) -> None:
        problem = self.schemas.problem(instance, ref)
        if problem is not None:
            raise self._violation(f"{what} does not match {ref}: {problem}")

    def _violation(self, text: str) -> SchemaViolation:
        """Record a violation and return the exception to raise at the call."""
        with self._lock:
            self.violations.append(text)
        return SchemaViolation(text)


# --- the pytest side ----------------------------------------------------------------------

_CALL_FAILED: Final = pytest.StashKey[bool]()
_SCHEMAS: SchemaSet | None = None


def schema_set() -> SchemaSet:
    """The process-wide :class:`SchemaSet`, built on first use (validators are cached)."""
    global _SCHEMAS
    if _SCHEMAS is None:
        _SCHEMAS = SchemaSet()
    return _SCHEMAS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "schema_exempt(reason): do not check frames and bodies against protocol/schemas/ "
        "(only for tests that feed deliberately invalid server output to a client)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def schema_check(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SchemaChecker]:
    """Validate every encode and every server frame or body a client decodes."""
    checker = SchemaChecker(schema_set())
    marker = request.node.get_closest_marker("schema_exempt")
    if marker is not None:
        if not marker.kwargs.get("reason") and not marker.args:
            pytest.fail("@pytest.mark.schema_exempt needs a reason")
        yield checker
        return
    checker.install(monkeypatch)
    yield checker
    violations = checker.take_violations()
    if violations and not request.node.stash.get(_CALL_FAILED, False):
        shown = "\n".join(f"  - {text}" for text in violations[:20])
        pytest.fail(f"{len(violations)} protocol schema violation(s) during the test:\n{shown}")
