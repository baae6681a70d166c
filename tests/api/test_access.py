"""Who may call what, and how bad input is refused without changing anything."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import ServerFactory
from tests.api.test_turns import history, new_conversation


def conversation_routes(server: Any) -> list[tuple[str, str]]:
    """Every (method, path) of the app that names a conversation, from its route table."""
    from daehwa.api.app import create_app

    app = create_app(server.app_parts.settings, models=server.models)
    found = []
    for path, operations in app.openapi()["paths"].items():
        if "{conversation_id}" in path:
            found.extend((method.upper(), path) for method in sorted(operations))
    return found


async def test_other_users_conversation_is_404_on_every_route(make_server: ServerFactory) -> None:
    server = await make_server()
    owner = await server.user("owner")
    other = await server.user("other")
    cid = await new_conversation(server, owner, title="비밀")
    await server.call(
        "POST", f"/v1/conversations/{cid}/messages", owner, json={"content": "비밀 이야기"}
    )
    before = await history(server, owner, cid)
    routes = conversation_routes(server)
    assert len(routes) >= 9
    for method, template in routes:
        path = template.replace("{conversation_id}", cid).replace("{message_id}", before[1]["id"])
        status, data = await server.call(method, path, other, json={"content": "x", "title": "x"})
        assert status == 404, (method, path, status, data)
        assert data["error"]["code"] == "not_found"
    assert await history(server, owner, cid) == before
    _, conversation = await server.call("GET", f"/v1/conversations/{cid}", owner)
    assert conversation["title"] == "비밀"


async def test_admin_can_read_any_conversation(make_server: ServerFactory) -> None:
    server = await make_server()
    owner = await server.user("owner")
    admin = await server.user("boss", admin=True)
    cid = await new_conversation(server, owner)
    status, _ = await server.call("GET", f"/v1/conversations/{cid}/messages", admin)
    assert status == 200


async def test_every_api_route_needs_credentials(make_server: ServerFactory) -> None:
    server = await make_server()
    owner = await server.user("owner")
    cid = await new_conversation(server, owner)
    for method, template in [
        *conversation_routes(server),
        ("GET", "/v1/conversations"),
        ("POST", "/v1/conversations"),
    ]:
        path = template.replace("{conversation_id}", cid).replace("{message_id}", "m")
        for headers in ({}, {"authorization": "Bearer dh-wrong"}, {"authorization": "Basic abc"}):
            status, data = await server.call(method, path, headers, json={})
            assert status == 401, (method, path, headers)
            assert data["error"]["code"] == "unauthorized"
    status, _ = await server.call("GET", "/healthz")
    assert status == 200


async def test_conversation_list_is_the_callers_newest_first(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("me")
    other = await server.user("other")
    ids = [await new_conversation(server, me, title=f"t{i}") for i in range(3)]
    await new_conversation(server, other, title="not mine")
    await server.call("POST", f"/v1/conversations/{ids[0]}/messages", me, json={"content": "위로"})
    _, page = await server.call("GET", "/v1/conversations?limit=2", me)
    assert [c["id"] for c in page["items"]] == [ids[0], ids[2]]
    assert page["next"]
    _, rest = await server.call("GET", f"/v1/conversations?limit=2&before={page['next']}", me)
    assert [c["id"] for c in rest["items"]] == [ids[1]]


async def test_rename_clear_delete(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("me")
    cid = await new_conversation(server, me, title="처음")
    status, data = await server.call(
        "PATCH", f"/v1/conversations/{cid}", me, json={"title": "새 제목"}
    )
    assert (status, data["title"]) == (200, "새 제목")
    await server.call("POST", f"/v1/conversations/{cid}/messages", me, json={"content": "하나"})
    status, _ = await server.call("POST", f"/v1/conversations/{cid}/clear", me)
    assert status == 204
    assert await history(server, me, cid) == []
    status, _ = await server.call("DELETE", f"/v1/conversations/{cid}", me)
    assert status == 204
    status, data = await server.call("GET", f"/v1/conversations/{cid}", me)
    assert status == 404


BAD_SENDS = [
    (b"{not json", "invalid_json", None),
    (b"[1, 2]", "invalid_json", None),
    (b"{}", "invalid_input", "content"),
    (b'{"content": ""}', "invalid_input", "content"),
    (b'{"content": "   "}', "invalid_input", "content"),
    (b'{"content": 42}', "invalid_input", "content"),
    (b'{"content": "hi", "request_id": 7}', "invalid_input", "request_id"),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_SENDS)
async def test_bad_send_is_refused_and_changes_nothing(
    make_server: ServerFactory, body: bytes, code: str, field: str | None
) -> None:
    server = await make_server()
    me = await server.user("me")
    cid = await new_conversation(server, me)
    await server.call("POST", f"/v1/conversations/{cid}/messages", me, json={"content": "원래"})
    before = await history(server, me, cid)
    status, data = await server.call(
        "POST",
        f"/v1/conversations/{cid}/messages",
        {**me, "content-type": "application/json"},
        data=body,
    )
    assert status == 400, data
    assert data["error"]["code"] == code
    assert data["error"].get("field") == field
    assert await history(server, me, cid) == before


async def test_content_over_the_limit_is_refused(make_server: ServerFactory) -> None:
    server = await make_server(chat={"max_content_chars": 10})
    me = await server.user("me")
    cid = await new_conversation(server, me)
    status, data = await server.call(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "가" * 11}
    )
    assert status == 400
    assert data["error"]["field"] == "content"
    assert "limit is 10" in data["error"]["message"]
    assert await history(server, me, cid) == []


async def test_body_over_the_limit_is_refused_before_it_is_read(
    make_server: ServerFactory,
) -> None:
    server = await make_server(server={"max_body_bytes": 2048})
    me = await server.user("me")
    cid = await new_conversation(server, me, title="제목")
    big = b'{"content": "' + "가".encode() * 1000 + b'"}'  # 3,015 bytes
    path = f"/v1/conversations/{cid}/messages"
    headers = {**me, "content-type": "application/json"}
    status, data = await server.call("POST", path, headers, data=big)
    assert status == 413, data
    assert data["error"]["code"] == "too_large"
    assert "2048" in data["error"]["message"]

    async def chunked() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(4):
            yield b" " * 1000

    reply = await server.stream("POST", path, headers, data=chunked())
    assert reply.status == 413 and b"too_large" in reply.raw
    for method, route in (("PATCH", f"/v1/conversations/{cid}"), ("POST", "/v1/conversations")):
        status, data = await server.call(method, route, headers, data=b" " * 3000)
        assert status == 413 and data["error"]["code"] == "too_large", (route, data)
    assert await history(server, me, cid) == []
    status, data = await server.call("GET", f"/v1/conversations/{cid}", me)
    assert data["title"] == "제목"
    # At the limit is fine, and the whole body is read.
    exact = b'{"content": "' + b"a" * (2048 - 15) + b'"}'
    assert len(exact) == 2048
    status, data = await server.call("POST", path, headers, data=exact)
    assert status == 200 and data["user_message"]["content"] == "a" * 2033


async def test_unknown_ids_and_bad_queries(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("me")
    cid = await new_conversation(server, me)
    status, data = await server.call("GET", "/v1/conversations/nope", me)
    assert (status, data["error"]["code"]) == (404, "not_found")
    status, data = await server.call("GET", f"/v1/conversations/{cid}/messages/nope/events", me)
    assert status == 404
    status, data = await server.call("POST", f"/v1/conversations/{cid}/messages/nope/stop", me)
    assert status == 404
    for query, field in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("before=-1", "before"),
        ("since=yesterday", "since"),
    ]:
        status, data = await server.call("GET", f"/v1/conversations/{cid}/messages?{query}", me)
        assert (status, data["error"]["field"]) == (400, field), query
    status, data = await server.call("POST", "/v1/conversations", me, json={"model": "nope"})
    assert (status, data["error"]["field"]) == (400, "model")
    status, data = await server.call("POST", "/v1/conversations", me, json={"variables": [1]})
    assert (status, data["error"]["field"]) == (400, "variables")
    status, data = await server.call("GET", "/v1/nothing-here", me)
    assert status == 404
