"""chatd's route table: the paths PROTOCOL.md documents (``/metrics`` included, its
section 5.7), each request event counted under its path template."""

from __future__ import annotations

import typing

from chatd import routes
from libchat import events as ev
from tests.support.endpoints import documented_endpoints


def test_chatd_serves_exactly_the_documented_endpoints() -> None:
    served = {(path, route.method) for path, route in routes.ROUTER.routes.items()}
    assert ("/metrics", b"GET") in served
    assert served == documented_endpoints()


def test_every_request_event_has_one_route_label() -> None:
    assert set(routes.LABELS) == set(typing.get_args(ev.HttpRequestEvent))
    assert len(set(routes.LABELS.values())) == len(routes.TABLE)
    assert routes.UNROUTED not in routes.LABELS.values()


def test_each_path_s_parser_yields_the_event_it_is_counted_under() -> None:
    for path, _, parser, event in routes.TABLE:
        assert routes.ROUTER.routes[path].parser is parser
        assert typing.get_type_hints(parser)["return"] is event, path

