"""Routers and the contract's request parsers: which paths exist is the router's to say."""

from __future__ import annotations

import pytest

from libchat import events as ev
from libchat import requests
from libchat.requests import CONTRACT_ROUTER, HttpRequest, Route, Router
from libchat.server import ServerConfig
from tests.libchat.pair import RawClient, parse_responses, request_bytes, upgrade_request
from tests.support.endpoints import documented_endpoints


def endpoints(router: Router) -> set[tuple[str, bytes]]:
    return {(path, route.method) for path, route in router.routes.items()}


def test_the_default_router_serves_the_documented_endpoints() -> None:
    assert ServerConfig().router is CONTRACT_ROUTER
    assert "/v1/conversations/{peer}/messages" in {path for path, _ in documented_endpoints()}
    assert endpoints(CONTRACT_ROUTER) == documented_endpoints()


def test_a_literal_path_matches_without_parameters() -> None:
    route, params = CONTRACT_ROUTER.match("/v1/login") or pytest.fail("no match")
    assert (route.method, route.parser, params) == (b"POST", requests.login, {})


def test_a_template_matches_one_non_empty_segment_decoded() -> None:
    login = Route(method=b"POST", parser=requests.login)
    history = Route(method=b"GET", parser=requests.history)
    router = Router({"/a/{x}/b/{y}": login, "/a/{x}": history, "/a/fixed": history})
    assert router.match("/a/%41%20b/b/2") == (login, {"x": "A b", "y": "2"})
    assert router.match("/a/q") == (history, {"x": "q"})
    assert router.match("/a/fixed") == (history, {})  # a literal path wins
    for path in ("/a//b/2", "/a/1/c/2", "/a/1/b/", "/a", "/a/1/b/2/", "/b/1", "", "*"):
        assert router.match(path) is None, path


def test_a_router_without_templates_matches_literal_paths_only() -> None:
    router = Router({"/healthz": Route(method=b"GET", parser=requests.health)})
    assert router.match("/healthz") is not None
    assert router.match("/nope") is None
    assert dict(router.routes) == {"/healthz": Route(method=b"GET", parser=requests.health)}


@pytest.mark.parametrize("template", ["healthz", "/a/{x}y", "/a/{}", "/a/{1x}", "/{x}/{x}"])
def test_a_malformed_template_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match=r"template|parameter"):
        Router({template: Route(method=b"GET", parser=requests.health)})


def test_the_engine_serves_only_the_router_s_paths() -> None:
    router = Router(
        {
            "/status": Route(method=b"GET", parser=requests.health),
            "/chat/{room}": Route(method=b"GET", parser=requests.websocket_upgrade),
        }
    )
    raw = RawClient(config=ServerConfig(router=router))
    assert raw.feed(request_bytes("GET", "/status")) == [ev.HealthRequest()]
    raw.server.respond(200, b"ok", now=0.0, content_type="text/plain")
    assert [r.status for r in raw.responses()] == [200]
    raw.feed(request_bytes("GET", "/healthz"))  # a contract path this router leaves out
    assert [(r.status, r.error_code) for r in raw.responses()] == [(404, "not_found")]
    raw.events.clear()
    # an upgrade on whatever path the router gives it
    assert raw.feed(upgrade_request(path="/chat/lobby")) == [
        ev.UpgradeRequest(token=None, origin=None)
    ]
    raw.server.accept_upgrade(0.0)
    assert raw.server.data_to_send().startswith(b"HTTP/1.1 101 ")


def test_a_parser_reads_the_request_view() -> None:
    request = HttpRequest(
        method=b"GET",
        path="/v1/conversations/Bob/messages",
        params={"peer": "Bob"},
        query={"limit": ["7"], "before": []},
        headers={b"authorization": [b"Bearer t.k"]},
        body=b"",
        proposes_upgrade=False,
    )
    assert request.header(b"authorization") == b"Bearer t.k"
    assert request.header(b"origin") is None
    assert request.param("before") is None
    assert requests.history(request) == ev.HistoryRequest(
        token="t.k", peer="bob", before=None, limit=7
    )


def test_a_rejection_is_answered_with_the_error_body() -> None:
    raw = RawClient()
    raw.feed(request_bytes("GET", "/v1/conversations"))
    (response,) = parse_responses(raw.server.data_to_send())
    assert (response.status, response.error_code) == (401, "unauthorized")
    assert raw.events == [ev.RequestRejected(status=401, code="unauthorized")]
