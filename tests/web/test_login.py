"""Logging in and out of the chat page: the session lives only in an HttpOnly cookie."""

from __future__ import annotations

from tests.web.conftest import Visitor


def _session_cookie(visitor: Visitor) -> dict[str, object]:
    cookies = [c for c in visitor.context.cookies() if c["name"] == "daehwa_session"]
    assert len(cookies) == 1
    return dict(cookies[0])


def test_login_with_api_key_keeps_nothing_in_script_storage(visitor: Visitor) -> None:
    page = visitor.login()
    assert page.inner_text("#user-name") == visitor.name
    cookie = _session_cookie(visitor)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert "daehwa_session" not in page.evaluate("document.cookie")
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.input_value("#login-key") == ""
    # A reload stays logged in: the cookie is the session.
    page.reload()
    page.wait_for_selector("body[data-ready]")
    assert page.is_hidden("#login-view")


def test_login_with_name_and_password(visitor: Visitor) -> None:
    name = f"{visitor.name}-pw"
    visitor.server.new_user(name, password="비밀번호12345")
    page = visitor.open()
    page.check("input[name=mode][value=password]", force=True)
    page.fill("#login-name", name)
    page.fill("#login-password", "비밀번호12345")
    page.press("#login-password", "Enter")
    page.wait_for_selector("body[data-ready]")
    assert page.inner_text("#user-name") == name


def test_wrong_key_shows_a_korean_error_and_stays_on_login(visitor: Visitor) -> None:
    page = visitor.open()
    page.fill("#login-key", "dk-not-a-real-key")
    page.click("#login-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#login-error').textContent.length > 0")
    assert "올바르지 않습니다" in page.inner_text("#login-error")
    assert page.is_hidden("#app-view")
    assert visitor.context.cookies() == []


def test_login_link_then_logout(visitor: Visitor) -> None:
    page = visitor.page
    page.goto(visitor.server.login_link(visitor.name))
    page.wait_for_selector("body[data-ready]")
    assert page.url == visitor.server.url + "/"
    page.click("#logout")
    page.wait_for_selector("#login-view:not([hidden])")
    assert [c for c in visitor.context.cookies() if c["name"] == "daehwa_session"] == []
    page.reload()
    page.wait_for_selector("#login-view:not([hidden])")
