"""The page's SSE reader, at the byte level, in the browser that runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.server import PageServer

READ = """async (chunks) => {
    const { readEventStream } = await import('/static/js/sse.js');
    const body = new ReadableStream({
        start(controller) {
            for (const chunk of chunks) controller.enqueue(new Uint8Array(chunk));
            controller.close();
        },
    });
    const events = [];
    await readEventStream(body, (e) => { events.push(e); });
    return events;
}"""


def frames(*events: tuple[int, str, dict[str, Any]], newline: bytes = b"\n") -> bytes:
    out = b""
    for seq, kind, data in events:
        lines = [
            b"id: %d" % seq,
            b"event: " + kind.encode(),
            b"data: " + json.dumps(data, ensure_ascii=False).encode(),
        ]
        out += newline.join(lines) + newline + newline
    return out


@pytest.fixture(scope="module")
def page(browser: Any, server: PageServer) -> Iterator[Any]:
    # No login needed: the module is a static file. One page serves every case here.
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        yield page
    finally:
        context.close()


def read(page: Any, chunks: list[bytes]) -> list[dict[str, Any]]:
    return list(page.evaluate(READ, [list(c) for c in chunks]))


def test_hangul_split_inside_a_character_at_every_byte(page: Any) -> None:
    raw = frames(
        (1, "delta", {"text": "안녕하세요, 반갑습니다"}), (2, "done", {"status": "complete"})
    )
    everywhere = [raw[:i] for i in range(1, len(raw))]
    results = page.evaluate(
        """async (cuts) => {
            const { readEventStream } = await import('/static/js/sse.js');
            const out = [];
            for (const [a, b] of cuts) {
                const body = new ReadableStream({ start(c) {
                    c.enqueue(new Uint8Array(a)); c.enqueue(new Uint8Array(b)); c.close(); } });
                const events = [];
                await readEventStream(body, (e) => { events.push(e); });
                out.push(events.map(e => [e.id, e.event, JSON.parse(e.data)]));
            }
            return out;
        }""",
        [[list(head), list(raw[len(head) :])] for head in everywhere],
    )
    expected = [
        ["1", "delta", {"text": "안녕하세요, 반갑습니다"}],
        ["2", "done", {"status": "complete"}],
    ]
    assert all(r == expected for r in results)


def test_crlf_split_between_chunks_comments_and_multiline_data(page: Any) -> None:
    raw = b': ping\r\n\r\nid: 7\r\nevent: delta\r\ndata: {"text":\r\ndata: "a\\nb"}\r\n\r\n'
    cut = raw.index(b"\r\n\r\nid") + 1  # between a CR and its LF
    events = read(page, [raw[:cut], raw[cut:]])
    assert events == [{"id": "7", "event": "delta", "data": '{"text":\n"a\\nb"}'}]


def test_a_newline_inside_a_delta_stays_in_the_text(page: Any) -> None:
    raw = frames((3, "delta", {"text": "첫 줄\n\n둘째 줄\r\n"}))
    events = read(page, [raw[i : i + 5] for i in range(0, len(raw), 5)])
    assert [json.loads(e["data"])["text"] for e in events] == ["첫 줄\n\n둘째 줄\r\n"]


def test_an_unfinished_frame_at_the_end_is_dropped(page: Any) -> None:
    raw = (
        frames((1, "delta", {"text": "완성"}))
        + 'id: 2\nevent: delta\ndata: {"text": "미완'.encode()
    )
    events = read(page, [raw])
    assert [e["id"] for e in events] == ["1"]
