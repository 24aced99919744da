"""protocol/: the schemas are sound, and the examples agree with both schemas and codec.

Every valid example must match its schema, parse with libchat's codec and re-encode to
the same JSON; every invalid example must fail its schema and be rejected by the codec
with the error code the index documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from jsonschema import Draft202012Validator

from libchat import protocol
from tests.schemacheck import (
    BODY_SCHEMAS,
    CLIENT_FRAMES_SCHEMA,
    SCHEMA_BASE,
    SERVER_FRAMES_SCHEMA,
    SchemaChecker,
    SchemaSet,
)

PROTOCOL_DIR: Final = Path(__file__).resolve().parents[2] / "protocol"
EXAMPLES: Final = PROTOCOL_DIR / "examples"
INDEX: Final[dict[str, Any]] = orjson.loads((EXAMPLES / "index.json").read_bytes())
SCHEMAS: Final = SchemaSet()
CLASS_OF_BODY_SCHEMA: Final = {ref: cls for cls, ref in BODY_SCHEMAS.items()}


def _side(ref: str) -> str:
    """Which decoder a schema reference belongs to: client frame, server frame or body."""
    if ref.startswith(CLIENT_FRAMES_SCHEMA):
        return "client"
    if ref.startswith((SERVER_FRAMES_SCHEMA, "message.json")):
        return "server"
    return "body"


def _decode(raw: bytes, ref: str) -> Any:
    side = _side(ref)
    if side == "client":
        return protocol.decode_client_frame(raw)
    if side == "server":
        return protocol.decode_server_frame(raw)
    return protocol.decode_body(raw, CLASS_OF_BODY_SCHEMA[ref])


def _encode(value: Any, ref: str) -> bytes | str:
    if _side(ref) == "body":
        return protocol.encode_body(value)
    return protocol.encode_frame(value)


# --- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS.documents))
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    document = SCHEMAS.documents[name]
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == SCHEMA_BASE + name


def test_required_schemas_exist() -> None:
    assert {"message.json", "auth.json", "conversation.json"} <= set(SCHEMAS.documents)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for value in node.values():
            found.extend(_refs(value))
        return found
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


@pytest.mark.parametrize("name", sorted(SCHEMAS.documents))
def test_every_ref_resolves(name: str) -> None:
    resolver = SCHEMAS.registry.resolver(base_uri=SCHEMA_BASE + name)
    for ref in _refs(SCHEMAS.documents[name]):
        resolved = resolver.lookup(ref).contents
        assert isinstance(resolved, dict), ref


# --- the index matches the folders --------------------------------------------------------


@pytest.mark.parametrize("kind", ["valid", "invalid"])
def test_index_lists_every_example(kind: str) -> None:
    on_disk = {path.name for path in (EXAMPLES / kind).iterdir()}
    assert on_disk == set(INDEX[kind])


def test_every_frame_type_and_body_has_a_valid_example() -> None:
    covered = set(INDEX["valid"].values())
    wanted = {
        f"frames-client.json#/$defs/{name}"
        for name in SCHEMAS.documents["frames-client.json"]["$defs"]
    }
    wanted |= {
        f"frames-server.json#/$defs/{name}"
        for name in SCHEMAS.documents["frames-server.json"]["$defs"]
    }
    wanted |= {"message.json#/$defs/push", *BODY_SCHEMAS.values()}
    assert wanted <= covered


# --- valid examples -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INDEX["valid"]))
def test_valid_example(name: str) -> None:
    ref = INDEX["valid"][name]
    raw = (EXAMPLES / "valid" / name).read_bytes()
    example = orjson.loads(raw)
    assert SCHEMAS.problem(example, ref) is None
    assert SCHEMAS.reference_validator(ref).is_valid(example)
    side = _side(ref)
    if side != "body":
        union = CLIENT_FRAMES_SCHEMA if side == "client" else SERVER_FRAMES_SCHEMA
        assert SCHEMAS.problem(example, union) is None
    value = _decode(raw, ref)
    assert orjson.loads(_encode(value, ref)) == example


# --- invalid examples ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INDEX["invalid"]))
def test_invalid_example(name: str, schema_check: SchemaChecker) -> None:
    entry = INDEX["invalid"][name]
    ref, expected = entry["schema"], entry["expect"]
    raw = (EXAMPLES / "invalid" / name).read_bytes()
    if entry.get("json", True):
        assert SCHEMAS.problem(orjson.loads(raw), ref) is not None
        assert not SCHEMAS.reference_validator(ref).is_valid(orjson.loads(raw))
    else:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
    with schema_check.paused(), pytest.raises(protocol.ProtocolViolation) as info:
        _decode(raw, ref)  # paused: the fixture would reject bad server frames first
    assert info.value.code == expected
