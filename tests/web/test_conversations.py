"""Managing conversations from the page: new (with a persona), open, page back, rename,
delete, search."""

from __future__ import annotations

import pytest

from tests.web.conftest import Visitor
from tests.web.pages import conversation_titles, reply_texts, send, user_texts, wait_reply


def _has(visitor: Visitor, path: str) -> bool:
    status, _ = _get(visitor, path)
    return status != 404


def _get(visitor: Visitor, path: str) -> tuple[int, object]:
    response = visitor.context.request.get(visitor.server.url + path)
    body = response.json() if "json" in response.headers.get("content-type", "") else None
    return response.status, body


def test_list_is_newest_first_and_opens_history_with_older_pages(visitor: Visitor) -> None:
    server = visitor.server
    turns = [(f"질문 {i}", f"답변 **{i}**") for i in range(35)]  # 70 messages
    old = server.seed(visitor.name, "오래된 대화", turns)
    server.seed(visitor.name, "새 대화 하나", [("안녕", "반가워요")])
    page = visitor.login()
    assert conversation_titles(page) == ["새 대화 하나", "오래된 대화"]

    page.click(f"#conversation-list li[data-id='{old}'] .conv-open")
    page.wait_for_selector("#message-list .message-user")
    assert user_texts(page)[-1] == "질문 34"
    assert reply_texts(page)[-1] == "답변 34"
    assert page.locator("#message-list .message").count() == 30
    assert (
        page.get_attribute(f"#conversation-list li[data-id='{old}'] .conv-open", "aria-current")
        == "page"
    )

    page.click("#older")
    page.wait_for_function(
        "() => document.querySelectorAll('#message-list .message').length === 60"
    )
    page.click("#older")
    page.wait_for_function(
        "() => document.querySelectorAll('#message-list .message').length === 70"
    )
    assert page.is_hidden("#older")
    assert user_texts(page) == [f"질문 {i}" for i in range(35)]

    # Sending moves the conversation to the top of the list.
    send(page, "이어서")
    wait_reply(page)
    assert conversation_titles(page)[0] == "오래된 대화"
    page.reload()
    page.wait_for_selector("#conversation-list li")
    assert conversation_titles(page) == ["오래된 대화", "새 대화 하나"]


def test_rename_and_delete(visitor: Visitor) -> None:
    visitor.server.seed(visitor.name, "이름 바꿀 대화", [("하나", "둘")])
    doomed = visitor.server.seed(visitor.name, "지울 대화", [("셋", "넷")])
    page = visitor.login()

    page.click("#conversation-list li:has-text('이름 바꿀 대화') button[title='이름 바꾸기']")
    page.fill("#rename-input", "바뀐 이름")
    page.press("#rename-input", "Enter")
    page.wait_for_selector("#rename-dialog:not([open])", state="attached")
    # The list is drawn again once the dialog's `close` event has fired, a task later.
    page.wait_for_selector("#conversation-list .conv-title:text-is('바뀐 이름')")
    assert "바뀐 이름" in conversation_titles(page)

    page.click(f"#conversation-list li[data-id='{doomed}'] .conv-open")
    page.wait_for_selector("#message-list .message-user")
    page.click(f"#conversation-list li[data-id='{doomed}'] button[title='삭제']")
    assert "지울 대화" in page.inner_text("#confirm-text")
    page.click("#confirm-dialog button[type=submit]")
    page.wait_for_selector(f"#conversation-list li[data-id='{doomed}']", state="detached")
    assert conversation_titles(page) == ["바뀐 이름"]
    assert page.is_visible("#welcome")
    assert _get(visitor, f"/v1/conversations/{doomed}")[0] == 404
    page.reload()
    page.wait_for_selector("#conversation-list li")
    assert conversation_titles(page) == ["바뀐 이름"]


def test_search_filters_titles_and_finds_messages(visitor: Visitor) -> None:
    target = visitor.server.seed(visitor.name, "여행 계획", [("부산 맛집 알려줘", "돼지국밥이요")])
    visitor.server.seed(visitor.name, "파이썬 공부", [("리스트 뒤집기", "reverse()")])
    page = visitor.login()
    page.fill("#search-input", "파이썬")
    assert conversation_titles(page) == ["파이썬 공부"]
    page.fill("#search-input", "")
    assert len(conversation_titles(page)) == 2
    if not _has(visitor, "/v1/search?q=x"):
        pytest.skip("the server has no GET /v1/search yet: title filtering checked only")
    page.fill("#search-input", "돼지국밥")
    hit = page.locator("#search-list .search-hit").first
    hit.wait_for()
    assert "돼지국밥" in hit.inner_text()
    assert hit.locator("mark").inner_text() == "돼지국밥"
    hit.click()
    page.wait_for_selector("#message-list .message-assistant:has-text('돼지국밥이요')")
    assert page.url.endswith(f"#c={target}")


def test_new_conversation_with_a_persona_and_its_variables(visitor: Visitor) -> None:
    if not _has(visitor, "/v1/personas"):
        pytest.skip("the server has no GET /v1/personas yet")
    page = visitor.login()
    page.click("#new-conversation")
    page.select_option("#new-persona", "tutor")
    labels = page.locator("#new-variables label").all_inner_texts()
    assert labels == ["언어", "레벨"]
    page.click("#new-dialog button[type=submit]")
    assert "값을 입력해 주세요" in page.inner_text("#new-dialog .error")
    page.fill("#new-variables input[data-name='언어']", "일본어")
    page.fill("#new-variables input[data-name='레벨']", "초급")
    page.fill("#new-title", "일본어 연습")
    page.click("#new-dialog button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#chat-title').textContent === '일본어 연습'"
    )
    assert conversation_titles(page)[0] == "일본어 연습"
    conversation_id = page.url.split("#c=")[1]
    status, body = _get(visitor, f"/v1/conversations/{conversation_id}")
    assert status == 200
    assert isinstance(body, dict)
    assert body["persona"] == "tutor"
    assert body["variables"] == {"언어": "일본어", "레벨": "초급"}
    assert "페르소나" in page.inner_text("#chat-persona")
