"""Typing Korean, using only the keyboard, and a 360 px wide screen."""

from __future__ import annotations

from tests.web.conftest import Visitor
from tests.web.pages import (
    ASSISTANT,
    reply_texts,
    send,
    user_texts,
    wait_reply,
    wait_streaming_text,
)

EVENTS = """() => {
    window.__sent = 0;
    const original = window.fetch;
    window.fetch = (url, init) => {
        if (init?.method === 'POST' && String(url).endsWith('/messages')) window.__sent += 1;
        return original(url, init);
    };
}"""


def test_enter_while_composing_hangul_does_not_send(visitor: Visitor) -> None:
    page = visitor.login()
    page.evaluate(EVENTS)
    cdp = visitor.context.new_cdp_session(page)
    page.focus("#composer-input")
    page.keyboard.insert_text("안녕")
    # The IME is composing 하; Enter commits it, as a Korean keyboard does.
    cdp.send("Input.imeSetComposition", {"text": "하", "selectionStart": 1, "selectionEnd": 1})
    cdp.send(
        "Input.dispatchKeyEvent",
        {
            "type": "rawKeyDown",
            "key": "Enter",
            "code": "Enter",
            "windowsVirtualKeyCode": 229,
            "nativeVirtualKeyCode": 229,
        },
    )
    cdp.send("Input.insertText", {"text": "하"})
    cdp.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Enter", "code": "Enter"})
    assert page.input_value("#composer-input") == "안녕하"
    assert page.evaluate("window.__sent") == 0
    assert page.locator("#message-list .message").count() == 0

    # Some browsers end the composition first and then send keyCode 229: still no send.
    page.dispatch_event("#composer-input", "keydown", {"key": "Enter", "keyCode": 229})
    assert page.evaluate("window.__sent") == 0

    page.keyboard.type("세요")
    page.keyboard.press("Enter")
    assert wait_reply(page) == "답: 안녕하세요"
    assert user_texts(page) == ["안녕하세요"]
    assert page.evaluate("window.__sent") == 1
    # No stray syllable left behind after sending.
    assert page.input_value("#composer-input") == ""


def test_shift_enter_adds_a_line(visitor: Visitor) -> None:
    page = visitor.login()
    page.focus("#composer-input")
    page.keyboard.type("첫 줄")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("둘째 줄")
    assert page.input_value("#composer-input") == "첫 줄\n둘째 줄"
    page.keyboard.press("Enter")
    wait_reply(page)
    assert user_texts(page) == ["첫 줄\n둘째 줄"]


def test_keyboard_only_send_stop_and_open(visitor: Visitor) -> None:
    page = visitor.login()
    # After login the composer has focus: type and press Enter.
    assert page.evaluate("document.activeElement.id") == "composer-input"
    page.keyboard.type("천천히 키보드로")
    page.keyboard.press("Enter")
    wait_streaming_text(page)
    # Tab reaches the stop button (the send button is hidden while a reply runs).
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "stop"
    page.keyboard.press("Enter")
    wait_reply(page, "stopped")
    # Start a new conversation and come back to the first one with Tab and Enter only.
    page.focus("#new-conversation")
    page.keyboard.press("Enter")
    page.wait_for_selector("#new-dialog[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#new-dialog:not([open])", state="attached")
    page.focus("#search-input")
    page.keyboard.press("Tab")  # the first conversation in the list
    assert page.evaluate("document.activeElement.className") == "conv-open"
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{ASSISTANT}[data-status=stopped]")
    # Opening it put the focus back in the composer.
    assert page.evaluate("document.activeElement.id") == "composer-input"
    page.keyboard.type("다시")
    page.keyboard.press("Enter")
    wait_reply(page)
    # Usage details open from the keyboard too.
    page.focus(f"{ASSISTANT}:last-child .usage summary")
    page.keyboard.press("Enter")
    assert page.locator(f"{ASSISTANT}:last-child .usage dl").is_visible()


def test_usable_at_360_px(phone: Visitor) -> None:
    page = phone.login()
    no_overflow = "() => document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(no_overflow)
    assert page.is_visible("#composer-input")
    assert page.is_visible("#status-connection")
    # The list is a drawer: closed (and out of the tab order) until asked for.
    assert not page.locator("#sidebar").is_visible() or page.evaluate(
        "document.querySelector('#sidebar').getBoundingClientRect().right <= 0"
    )
    send(page, "마크다운 표와 코드")
    wait_reply(page)
    assert page.evaluate(no_overflow)
    # Wide code scrolls inside its block, not the page.
    assert page.evaluate(
        "() => [...document.querySelectorAll('.code-block')].every("
        "b => b.getBoundingClientRect().right <= window.innerWidth)"
    )
    page.click("#sidebar-toggle")
    page.wait_for_function(
        "() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0"
    )
    assert page.get_attribute("#sidebar-toggle", "aria-expanded") == "true"
    assert page.evaluate("document.activeElement.id") == "new-conversation"
    page.keyboard.press("Escape")
    page.wait_for_function(
        "() => document.querySelector('#sidebar').getBoundingClientRect().right <= 0"
    )
    assert reply_texts(page)[0].startswith("물론입니다!")
