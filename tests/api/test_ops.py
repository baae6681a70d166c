"""Health, metrics, login by password, link and cookie."""

from __future__ import annotations

from tests.api.conftest import ServerFactory
from tests.api.test_turns import new_conversation


async def test_metrics_count_replies(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    await server.call("POST", f"/v1/conversations/{cid}/messages", me, json={"content": "하나"})
    status, body = await server.call("GET", "/metrics")
    assert status == 200
    text = body.decode()
    assert 'daehwa_replies_total{model="scripted",status="complete"} 1' in text
    assert "daehwa_first_token_seconds_count 1" in text
    assert "daehwa_active_runs 0" in text
    assert 'daehwa_reply_slots{state="limit"} 100' in text
    assert 'daehwa_reply_slots{state="running"} 0' in text
    assert "daehwa_turns_refused_total 0" in text


async def test_password_login_sets_an_httponly_cookie(make_server: ServerFactory) -> None:
    server = await make_server()
    await server.app_parts.accounts.create_user("minji", password="긴 비밀번호 123")
    status, data = await server.call(
        "POST", "/v1/auth/login", json={"name": "minji", "password": "틀린 비밀번호"}
    )
    assert status == 401
    async with server.http.post(
        server.url + "/v1/auth/login", json={"name": "minji", "password": "긴 비밀번호 123"}
    ) as response:
        assert response.status == 200
        cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    status, data = await server.call("GET", "/v1/auth/me")
    assert (status, data["user"]["name"]) == (200, "minji")
    status, _ = await server.call("POST", "/v1/auth/logout")
    assert status == 204
    status, _ = await server.call("GET", "/v1/auth/me")
    assert status == 401


async def test_one_time_login_link(make_server: ServerFactory) -> None:
    server = await make_server()
    created = await server.app_parts.accounts.create_user("minji")
    token = await server.app_parts.accounts.login_link_token(created.user)
    async with server.http.get(server.url + f"/login?token={token}", allow_redirects=False) as r:
        assert r.status == 303
    status, _ = await server.call("GET", "/v1/auth/me")
    assert status == 200
    server.http.cookie_jar.clear()
    async with server.http.get(server.url + f"/login?token={token}", allow_redirects=False) as r:
        assert r.status == 401
