"""What the tests do on the chat page, in the user's terms."""

from __future__ import annotations

from typing import Any

ASSISTANT = "#message-list .message-assistant"
USER = "#message-list .message-user"


def send(page: Any, text: str) -> None:
    """Type a message in the composer and press Enter."""
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def wait_streaming_text(page: Any) -> str:
    """Wait until the last reply shows some text while still streaming; returns that text."""
    handle = page.wait_for_function(
        """() => {
            const m = [...document.querySelectorAll('#message-list .message-assistant')].at(-1);
            const text = m?.querySelector('.content')?.innerText ?? '';
            return m?.dataset.status === 'streaming' && text.length > 0 ? text : null;
        }"""
    )
    return str(handle.json_value())


def wait_reply(page: Any, status: str = "complete") -> str:
    """Wait until the last reply has ``status``; returns its text as shown."""
    page.wait_for_selector(f"{ASSISTANT}:last-child[data-status={status}]")
    return reply_texts(page)[-1]


def reply_texts(page: Any) -> list[str]:
    return [str(t) for t in page.locator(f"{ASSISTANT} .content").all_inner_texts()]


def user_texts(page: Any) -> list[str]:
    return [str(t) for t in page.locator(f"{USER} .content").all_inner_texts()]


def conversation_titles(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#conversation-list .conv-title").all_inner_texts()]
