"""A fast yes/no check for the subset of JSON Schema that ``protocol/schemas/`` uses.

``jsonschema`` takes 100-300 microseconds per frame; the schema fixture runs on every
frame of the suite, so it first asks a predicate compiled here (a few microseconds) and
only calls ``jsonschema`` to describe a failure. The compiler knows exactly the keywords
below and raises on any other, so a schema edit can never be skipped silently;
``tests/protocol/test_examples.py`` checks that it agrees with ``jsonschema``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

Check = Callable[[Any], bool]

# Keywords that never change the outcome of validation.
_ANNOTATIONS: Final = frozenset({"title", "description", "$comment", "examples", "default"})


def _is_integer(value: Any) -> bool:
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value) and value.is_integer()


_TYPES: Final[Mapping[str, Check]] = {
    "object": lambda value: type(value) is dict,
    "array": lambda value: type(value) is list,
    "string": lambda value: type(value) is str,
    "integer": _is_integer,
    "number": lambda value: type(value) in (int, float),
    "boolean": lambda value: type(value) is bool,
    "null": lambda value: value is None,
}


def json_equal(one: Any, two: Any) -> bool:
    """Equality as JSON Schema defines it: ``true`` is not ``1``, ``1.0`` is ``1``."""
    if type(one) is bool or type(two) is bool or one is None or two is None:
        return one is two
    if type(one) in (int, float) and type(two) in (int, float):
        return bool(one == two)
    if type(one) is not type(two):
        return False
    if type(one) is list:
        return len(one) == len(two) and all(map(json_equal, one, two))
    if type(one) is dict:
        return one.keys() == two.keys() and all(json_equal(one[k], two[k]) for k in one)
    return bool(one == two)


def compile_schema(schema: Any) -> Check:
    """A predicate for ``schema`` (already free of ``$ref``, see ``schemacheck._inline``)."""
    if schema is True:
        return lambda _value: True
    if schema is False:
        return lambda _value: False
    if not isinstance(schema, dict):
        raise ValueError(f"not a schema: {schema!r}")
    checks = [
        _keyword(key, value, schema) for key, value in schema.items() if key not in _ANNOTATIONS
    ]
    checks = [check for check in checks if check is not None]
    if len(checks) == 1:
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _keyword(key: str, arg: Any, schema: Mapping[str, Any]) -> Check | None:
    match key:
        case "type":
            names = [arg] if isinstance(arg, str) else list(arg)
            tests = [_TYPES[name] for name in names]
            return lambda value: any(test(value) for test in tests)
        case "properties":
            props = {name: compile_schema(sub) for name, sub in arg.items()}
            return lambda value: (
                type(value) is not dict
                or all(check(value[name]) for name, check in props.items() if name in value)
            )
        case "required":
            names = list(arg)
            return lambda value: type(value) is not dict or all(n in value for n in names)
        case "items":
            item = compile_schema(arg)
            return lambda value: type(value) is not list or all(map(item, value))
        case "minItems":
            return lambda value: type(value) is not list or len(value) >= arg
        case "maxItems":
            return lambda value: type(value) is not list or len(value) <= arg
        case "minLength":
            return lambda value: type(value) is not str or len(value) >= arg
        case "maxLength":
            return lambda value: type(value) is not str or len(value) <= arg
        case "pattern":
            search = re.compile(arg).search
            return lambda value: type(value) is not str or search(value) is not None
        case "minimum":
            return lambda value: type(value) not in (int, float) or value >= arg
        case "maximum":
            return lambda value: type(value) not in (int, float) or value <= arg
        case "const":
            return lambda value: json_equal(value, arg)
        case "enum":
            options = list(arg)
            return lambda value: any(json_equal(value, option) for option in options)
        case "allOf":
            parts = [compile_schema(sub) for sub in arg]
            return lambda value: all(part(value) for part in parts)
        case "anyOf":
            parts = [compile_schema(sub) for sub in arg]
            return lambda value: any(part(value) for part in parts)
        case "oneOf":
            parts = [compile_schema(sub) for sub in arg]
            return lambda value: sum(1 for part in parts if part(value)) == 1
        case "if":
            condition = compile_schema(arg)
            then = compile_schema(schema.get("then", True))
            otherwise = compile_schema(schema.get("else", True))
            return lambda value: then(value) if condition(value) else otherwise(value)
        case "then" | "else":
            return None  # handled with "if" (and ignored without it, as the spec says)
    raise ValueError(f"schemafast does not know the keyword {key!r}: teach it, or use another")
