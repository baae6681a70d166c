"""Take the chat page's screenshots for docs/web.md.

    .venv/bin/python -m tests.web.screenshots docs/img

Starts a server with the page-test model, seeds a few conversations, and saves PNGs
of the login page, the chat (desktop, light and dark) and a phone (360 px, with and
without the conversation drawer). Korean text needs a Korean font installed
(Debian: fonts-nanum or fonts-noto-cjk).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.web.conftest import CHROMIUM_ARGS, chromium_path
from tests.web.server import PageServer

SEED = [
    ("부산 여행 계획", [("부산 2박 3일 일정 짜 줘", "첫날은 해운대, 둘째 날은 감천문화마을…")]),
    ("이력서 다듬기", [("자기소개서 첫 문장 고쳐 줘", "‘끝까지 파고드는 개발자’는 어떨까요?")]),
    ("일본어 연습", [("こんにちは", "안녕하세요! 오늘은 인사말부터 연습해 볼까요?")]),
]


def _login(server: PageServer, browser: Any, key: str, **context: Any) -> Any:
    page = browser.new_context(locale="ko-KR", **context).new_page()
    page.goto(server.url)
    page.fill("#login-key", key)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("body[data-ready]")
    return page


def _ask(page: Any, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")
    page.wait_for_selector("#message-list .message-assistant:last-child[data-status=complete]")


def take(out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise SystemExit("Chromium is not installed (apt-get install chromium)")
    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        server = PageServer(Path(tmp)).start()
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            key = server.new_user("민지")
            for title, turns in SEED:
                server.seed("민지", title, turns)

            def shot(page: Any, name: str) -> None:
                path = out / name
                page.screenshot(path=str(path))
                saved.append(path)

            login = browser.new_context(
                locale="ko-KR", viewport={"width": 1280, "height": 800}
            ).new_page()
            login.goto(server.url)
            login.wait_for_selector("#login-view:not([hidden])")
            shot(login, "login.png")

            desk = _login(server, browser, key, viewport={"width": 1280, "height": 800})
            _ask(desk, "파이썬에서 리스트를 뒤집는 방법을 마크다운으로 정리해 줘")
            desk.locator("#message-list .usage summary").last.click()
            shot(desk, "chat-desktop.png")

            desk.click("#new-conversation")
            desk.click("#new-dialog button[type=submit]")
            desk.wait_for_selector("#new-dialog:not([open])", state="attached")
            _ask(desk, "XSS 테스트용 출력을 보여줘")
            desk.locator("#message-list .ext-image-button").last.scroll_into_view_if_needed()
            shot(desk, "chat-unsafe-output.png")

            dark = _login(
                server,
                browser,
                key,
                viewport={"width": 1280, "height": 800},
                color_scheme="dark",
            )
            dark.click("#conversation-list li:has-text('부산 여행 계획') .conv-open")
            dark.wait_for_selector("#message-list .message-assistant")
            dark.fill("#composer-input", "천천히 숫자를 세어 줘")
            dark.press("#composer-input", "Enter")
            dark.wait_for_function(
                "() => document.querySelector('#message-list .message-assistant:last-child"
                " .content').innerText.length > 40"
            )
            shot(dark, "chat-dark-streaming.png")

            phone = _login(
                server, browser, key, viewport={"width": 360, "height": 740}, is_mobile=True
            )
            phone.click("#sidebar-toggle")
            phone.wait_for_function(
                "() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0"
            )
            shot(phone, "phone-list.png")
            phone.click("#conversation-list li:has-text('파이썬') .conv-open")
            phone.wait_for_selector("#message-list .message-assistant[data-status=complete]")
            phone.wait_for_function(
                "() => document.querySelector('#sidebar').getBoundingClientRect().right <= 0"
            )
            phone.locator("#message-list .code-block").scroll_into_view_if_needed()
            shot(phone, "phone-chat.png")
        finally:
            browser.close()
            server.stop()
    return saved


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
    for path in take(out):
        print(path)


if __name__ == "__main__":
    main()
