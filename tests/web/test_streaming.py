"""Replies stream into the page, survive dropped connections and reloads, and can be stopped."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import Visitor
from tests.web.models import CHUNKY_PIECES, CHUNKY_REPLY, CHUNKY_TEXTS, SLOW_REPLY
from tests.web.pages import (
    reply_texts,
    send,
    user_texts,
    wait_reply,
    wait_streaming_text,
)
from tests.web.server import BANNED_WORD


def _events_requests(visitor: Visitor) -> list[str | None]:
    """Last-Event-ID of each resume request the server saw."""
    return [
        r.last_event_id
        for r in visitor.server.cutter.seen
        if r.method == "GET" and r.path.endswith("/events")
    ]


def test_send_streams_text_then_history_survives_reload(visitor: Visitor) -> None:
    page = visitor.login()
    send(page, "천천히 세어 줘")
    partial = wait_streaming_text(page)
    assert SLOW_REPLY.startswith(partial.rstrip())
    assert partial.rstrip() != SLOW_REPLY  # seen before the end: it streamed
    assert page.is_visible("#stop")
    assert page.is_visible("#status-generation")
    assert page.inner_text("#status-generation").endswith("중")
    assert wait_reply(page) == SLOW_REPLY
    assert page.is_hidden("#status-generation")
    assert page.is_visible("#send")

    send(page, "두 번째 질문")
    assert wait_reply(page) == "답: 두 번째 질문"
    # The first message named the conversation.
    page.wait_for_function(
        "() => document.querySelector('#chat-title').textContent === '천천히 세어 줘'"
    )

    page.reload()
    page.wait_for_selector("#message-list .message-assistant")
    assert user_texts(page) == ["천천히 세어 줘", "두 번째 질문"]
    assert reply_texts(page) == [SLOW_REPLY, "답: 두 번째 질문"]
    assert page.inner_text("#chat-title") == "천천히 세어 줘"


# Records the last reply's text on every animation frame while it streams.
_SAMPLE_FRAMES = """() => {
    window.__shown = [];
    const sample = () => {
        const m = [...document.querySelectorAll('#message-list .message-assistant')].at(-1);
        const text = m?.querySelector('.content')?.innerText ?? '';
        if (m?.dataset.status === 'streaming' && text) window.__shown.push(text);
        requestAnimationFrame(sample);
    };
    requestAnimationFrame(sample);
}"""


def _streamed_frames(page: Any, message: str) -> tuple[list[str], str]:
    """The distinct texts the last reply showed while streaming, and its final text."""
    page.evaluate(_SAMPLE_FRAMES)
    send(page, message)
    final = wait_reply(page)
    shown = list(dict.fromkeys(str(t).rstrip() for t in page.evaluate("window.__shown")))
    return shown, final


def test_text_that_arrives_in_bursts_is_revealed_a_little_each_frame(visitor: Visitor) -> None:
    # A paced upstream hands over a phrase at a time; the page spreads each one
    # over the time until the next is due instead of showing it in one jump.
    page = visitor.login()
    shown, final = _streamed_frames(page, "덩어리로 답해 줘")
    assert final == CHUNKY_REPLY
    assert all(final.startswith(text) for text in shown), shown
    assert len(shown) >= CHUNKY_PIECES + 5, shown
    # The first piece shows whole at once: the first token is never held back.
    assert shown[0] == CHUNKY_TEXTS[0].rstrip()


def test_the_list_follows_a_reply_revealed_frame_by_frame(phone: Visitor) -> None:
    page = phone.login()
    for n in range(4):  # enough to scroll on a phone
        send(page, f"스크롤 채우기 {n} " + "가나다라마바사 " * 12)
        wait_reply(page)
    send(page, "덩어리로 답해 줘")
    assert wait_reply(page) == CHUNKY_REPLY
    page.wait_for_timeout(100)  # the scroll follows a frame after the text
    gap = page.evaluate(
        "() => { const s = document.getElementById('messages');"
        " return s.scrollHeight - s.scrollTop - s.clientHeight; }"
    )
    assert gap < 2


def test_reduced_motion_shows_each_delta_at_once(visitor: Visitor) -> None:
    page = visitor.login()
    page.emulate_media(reduced_motion="reduce")
    shown, final = _streamed_frames(page, "덩어리로 답해 줘")
    assert final == CHUNKY_REPLY
    assert all(final.startswith(text) for text in shown), shown
    assert 1 <= len(shown) <= CHUNKY_PIECES, shown


def test_token_usage_is_shown_on_demand(visitor: Visitor) -> None:
    page = visitor.login()
    send(page, "사용량")
    wait_reply(page)
    usage = page.locator("#message-list .message-assistant .usage").last
    assert usage.locator("dl").is_hidden()
    usage.locator("summary").click()
    shown = usage.locator("dl").inner_text()
    assert "입력" in shown and "출력" in shown and "page" in shown


def test_dropped_connection_resumes_without_lost_or_doubled_text(visitor: Visitor) -> None:
    page = visitor.login()
    cutter = visitor.server.cutter
    cuts = cutter.cuts
    resumes = len(_events_requests(visitor))
    # The first stream breaks after 3 deltas, the resumed one after 4 more.
    cutter.plan[:] = [3, 4]
    send(page, "천천히 다시 세어 줘")
    assert wait_reply(page) == SLOW_REPLY
    assert cutter.cuts == cuts + 2
    last_ids = _events_requests(visitor)[resumes:]
    assert len(last_ids) == 2
    assert all(i is not None and int(i) > 0 for i in last_ids)
    assert page.inner_text("#status-connection") == "연결됨"
    page.reload()
    page.wait_for_selector("#message-list .message-assistant[data-status=complete]")
    assert reply_texts(page) == [SLOW_REPLY]


def test_drop_before_the_first_event_repeats_the_send_once(visitor: Visitor) -> None:
    page = visitor.login()
    cutter = visitor.server.cutter
    cuts = cutter.cuts
    cutter.plan[:] = [0]
    send(page, "한 번만 보내기")
    assert wait_reply(page) == "답: 한 번만 보내기"
    assert cutter.cuts == cuts + 1
    page.reload()
    page.wait_for_selector("#message-list .message-assistant[data-status=complete]")
    # The retried send carried the same request_id: one turn, not two.
    assert user_texts(page) == ["한 번만 보내기"]
    assert reply_texts(page) == ["답: 한 번만 보내기"]


def test_reload_mid_reply_shows_it_continuing(visitor: Visitor) -> None:
    page = visitor.login()
    send(page, "천천히 이어서")
    wait_streaming_text(page)
    resumes = len(_events_requests(visitor))
    page.reload()
    page.wait_for_selector("#message-list .message-assistant")
    # Still running after the reload: it is followed from the server's event log.
    assert wait_reply(page) == SLOW_REPLY
    assert _events_requests(visitor)[resumes:] == ["0"]
    assert user_texts(page) == ["천천히 이어서"]
    assert len(reply_texts(page)) == 1


def test_stop_keeps_the_partial_reply_marked_stopped(visitor: Visitor) -> None:
    page = visitor.login()
    send(page, "천천히 멈춰 봐")
    wait_streaming_text(page)
    page.click("#stop")
    text = wait_reply(page, "stopped")
    assert SLOW_REPLY.startswith(text.rstrip())
    assert text.rstrip() != SLOW_REPLY
    assert page.inner_text("#message-list .message-assistant .badge") == "중지됨"
    page.reload()
    page.wait_for_selector("#message-list .message-assistant[data-status=stopped]")
    assert reply_texts(page) == [text]


def test_blocked_message_is_marked_and_given_back_for_editing(visitor: Visitor) -> None:
    page = visitor.login()
    text = f"이 문장에는 {BANNED_WORD}가 있습니다"
    send(page, text)
    page.wait_for_selector("#message-list .message-user[data-status=blocked]")
    assert page.locator("#message-list .message-assistant").count() == 0
    assert page.inner_text("#message-list .message-user .message-error").strip()
    assert page.input_value("#composer-input") == text
    assert page.is_visible("#send")
    page.reload()
    page.wait_for_selector("#message-list .message-user[data-status=blocked]")
    assert page.inner_text("#message-list .message-user .badge") == "차단됨"
