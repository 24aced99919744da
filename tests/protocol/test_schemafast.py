"""The compiled checks of tests/schemafast.py agree with jsonschema on our schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.schemacheck import BODY_SCHEMAS, FRAME_SCHEMAS, SchemaSet
from tests.schemafast import compile_schema, json_equal

EXAMPLES: Final = Path(__file__).resolve().parents[2] / "protocol" / "examples"
INDEX: Final[dict[str, Any]] = orjson.loads((EXAMPLES / "index.json").read_bytes())
SCHEMAS: Final = SchemaSet()
REFS: Final = sorted(
    {*FRAME_SCHEMAS.values(), *BODY_SCHEMAS.values(), "frames-client.json", "frames-server.json"}
)


def _examples() -> list[Any]:
    found = []
    for kind in ("valid", "invalid"):
        for name, entry in INDEX[kind].items():
            if isinstance(entry, dict) and entry.get("json") is False:
                continue
            found.append(orjson.loads((EXAMPLES / kind / name).read_bytes()))
    return found


SAMPLES: Final = _examples()


def _agree(instance: Any, ref: str) -> None:
    expected = SCHEMAS.reference_validator(ref).is_valid(instance)
    assert SCHEMAS.fast(ref)(instance) is expected, (ref, instance)


@pytest.mark.parametrize("ref", REFS)
def test_agrees_on_every_example(ref: str) -> None:
    for sample in SAMPLES:
        _agree(sample, ref)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "bob", "Bob", "c-1", "c 1", "1.0", "1.0.0", "Bearer", "x" * 65]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["type", "id", "seq", "to", "body"]), children, max_size=3
        )
    ),
    max_leaves=6,
)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A valid example with one member replaced, removed or added (maybe one level down)."""
    sample = draw(st.sampled_from(SAMPLES))
    if not isinstance(sample, dict) or not sample:
        return sample
    value = dict(sample)
    key = draw(st.sampled_from(sorted(value)))
    inner = value[key]
    if isinstance(inner, dict) and inner and draw(st.booleans()):
        inner = dict(inner)
        inner[draw(st.sampled_from(sorted(inner)))] = draw(json_values)
        value[key] = inner
        return value
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "replace":
        value[key] = draw(json_values)
    elif action == "remove":
        del value[key]
    else:
        value[draw(st.sampled_from(["type", "status", "code", "extra"]))] = draw(json_values)
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance=mutated(), ref=st.sampled_from(REFS))
def test_agrees_on_mutated_examples(instance: Any, ref: str) -> None:
    _agree(instance, ref)


@settings(max_examples=100, deadline=None)
@given(instance=json_values, ref=st.sampled_from(REFS))
def test_agrees_on_arbitrary_json(instance: Any, ref: str) -> None:
    _agree(instance, ref)


def test_json_equality_follows_json_schema() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(1, True)
    assert not json_equal(0, False)
    assert not json_equal(None, False)
    assert json_equal({"a": [1, "x"]}, {"a": [1.0, "x"]})
    assert not json_equal([1], [1, 2])


def test_unknown_keywords_fail_loudly() -> None:
    with pytest.raises(ValueError, match="uniqueItems"):
        compile_schema({"type": "array", "uniqueItems": True})
