"""OpenAIModel against the fake upstream: every streaming scenario, at the Chunk level."""

from __future__ import annotations

import orjson
import pytest

from daehwa.errors import ProviderError
from daehwa.llm.base import Chunk, GenerationParams, ToolSpec, read_piece
from daehwa.llm.openai_stream import ChunkReader
from daehwa.messages import ToolCall
from tests.fakes.openai_upstream import DEFAULT_TEXT, FakeOpenAIUpstream
from tests.fakes.scenario import pieces
from tests.llm.conftest import ModelFactory
from tests.llm.streams import collect, reasoning_of, text_of, user

FLAVORS = ["openai", "zai", "ollama", "vllm"]
WEATHER = ToolSpec(
    "get_weather",
    "오늘 날씨",
    {"type": "object", "properties": {"location": {"type": "string"}}},
)
EXPECTED_CALLS = [
    ToolCall("call_seoul", "get_weather", {"location": "서울", "unit": "celsius"}),
    ToolCall("call_busan", "get_weather", {"location": "부산", "unit": "celsius"}),
]


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_text_stream_yields_deltas_then_one_final_chunk(
    fake: FakeOpenAIUpstream, make_model: ModelFactory, flavor: str
) -> None:
    fake.enqueue(f"text flavor={flavor} reasoning=0")
    chunks = await collect(make_model(flavor=flavor))
    assert text_of(chunks).strip("\n") == DEFAULT_TEXT
    assert all(c.text for c in chunks[:-1]), "no empty chunks (role chunk) before the end"
    final = chunks[-1]
    assert (final.text, final.finish_reason, final.tool_calls) == ("", "stop", [])
    assert [c.finish_reason for c in chunks].count("stop") == 1, "a repeated finish is one"
    assert final.usage is not None
    assert final.usage.completion_tokens == len(pieces(DEFAULT_TEXT, None))


async def test_events_of_one_read_become_one_chunk_and_an_error_after_text_keeps_it(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    # No delay: the fake writes every event at once, and they arrive in one read.
    fake.enqueue("text tokens=6")
    chunks = await collect(make_model())
    assert [c.text for c in chunks[:-1]] == ["".join(pieces(DEFAULT_TEXT, 6))]
    # Text, then an error chunk in the same read: the text is yielded before the error.
    fake.enqueue("error_chunk tokens=6")
    seen: list[str] = []
    with pytest.raises(ProviderError, match="crashed"):
        async for chunk in make_model().stream(user(), GenerationParams()):
            seen.append(chunk.text)
    assert "".join(seen) == "".join(pieces(DEFAULT_TEXT, 6)[:3])


async def test_openai_usage_chunk_only_when_include_usage(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    chunks = await collect(make_model(include_usage=False))
    assert "stream_options" not in fake.requests[-1].json
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is None
    chunks = await collect(make_model())
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens > 0


async def test_zai_reasoning_comes_first_and_never_in_text(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    fake.enqueue("text flavor=zai")
    chunks = await collect(make_model(flavor="zai", thinking=True))
    assert reasoning_of(chunks) == "생각 중: 사용자가 인사했다."
    first_text = next(i for i, c in enumerate(chunks) if c.text)
    assert all(c.reasoning for c in chunks[:first_text])
    assert "생각" not in text_of(chunks)
    # GLM's stray newline before the answer is passed on as text, unaltered.
    assert text_of(chunks) == "\n" + DEFAULT_TEXT


async def test_zai_thinking_disabled_gives_no_reasoning(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    fake.enqueue("text flavor=zai")
    chunks = await collect(make_model(flavor="zai", thinking=False))
    assert fake.requests[-1].json["thinking"] == {"type": "disabled"}
    assert reasoning_of(chunks) == ""
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    ("flavor", "field"),
    [
        ("ollama", "reasoning"),
        ("vllm", "reasoning"),
        ("vllm", "reasoning_content"),
        ("openai", "thinking_content"),  # CLOVA's OpenAI-compatible endpoint
    ],
)
async def test_every_reasoning_field_goes_to_reasoning(
    fake: FakeOpenAIUpstream, make_model: ModelFactory, flavor: str, field: str
) -> None:
    fake.enqueue(f"text flavor={flavor} reasoning=1 reasoning_field={field}")
    chunks = await collect(make_model(flavor=flavor))
    assert reasoning_of(chunks) == "생각 중: 사용자가 인사했다."
    assert text_of(chunks) == DEFAULT_TEXT


async def test_vllm_thinking_goes_through_chat_template_kwargs(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    fake.enqueue("text flavor=vllm")
    chunks = await collect(make_model(flavor="vllm", thinking=True))
    assert fake.requests[-1].json["chat_template_kwargs"] == {"enable_thinking": True}
    assert reasoning_of(chunks)
    fake.enqueue("text flavor=vllm")
    chunks = await collect(make_model(flavor="vllm", thinking=False))
    assert fake.requests[-1].json["chat_template_kwargs"] == {"enable_thinking": False}
    assert not reasoning_of(chunks)


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_parallel_tool_calls_are_joined_whole_or_incremental(
    fake: FakeOpenAIUpstream, make_model: ModelFactory, flavor: str
) -> None:
    fake.enqueue(f"tools flavor={flavor} reasoning=0")
    chunks = await collect(make_model(flavor=flavor), params=GenerationParams(tools=(WEATHER,)))
    assert [c for c in chunks[:-1] if c.tool_calls] == [], "calls come only when complete"
    assert chunks[-1].tool_calls == EXPECTED_CALLS
    assert chunks[-1].finish_reason == "tool_calls"
    assert text_of(chunks) == ""


@pytest.mark.parametrize(
    "modifiers",
    ["split=1", "crlf=1", "keepalive=1", "split=1 crlf=1 keepalive=1", "framing=close"],
)
@pytest.mark.parametrize("flavor", ["openai", "zai"])
async def test_byte_level_quirks_do_not_change_the_answer(
    fake: FakeOpenAIUpstream, make_model: ModelFactory, flavor: str, modifiers: str
) -> None:
    fake.enqueue(f"text flavor={flavor} reasoning=0 {modifiers}")
    chunks = await collect(make_model(flavor=flavor))
    assert text_of(chunks).strip("\n") == DEFAULT_TEXT
    assert "\ufffd" not in text_of(chunks), "a split 안 must not become a replacement char"
    assert chunks[-1].finish_reason == "stop"


async def test_content_length_body(fake: FakeOpenAIUpstream, make_model: ModelFactory) -> None:
    fake.enqueue("text framing=length")
    chunks = await collect(make_model())
    assert text_of(chunks) == DEFAULT_TEXT


async def test_length_finish(fake: FakeOpenAIUpstream, make_model: ModelFactory) -> None:
    fake.enqueue("length tokens=3 delay=0.01")
    chunks = await collect(make_model())
    assert len(chunks) == 4
    assert chunks[-1].finish_reason == "length"


async def test_delayed_first_byte_and_token_delay(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    fake.enqueue("text first_byte=0.05 ttft=0.05 delay=0.01 tokens=4")
    chunks = await collect(make_model())
    assert [c.text for c in chunks[:-1]] == ["안녕", "하세", "요!", " 무"]


@pytest.mark.parametrize("flavor", ["openai", "vllm", "ollama"])
async def test_error_chunk_mid_stream_raises_after_the_text_before_it(
    fake: FakeOpenAIUpstream, make_model: ModelFactory, flavor: str
) -> None:
    fake.enqueue(f"error_chunk flavor={flavor}")
    seen: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for chunk in make_model(flavor=flavor).stream(user(), GenerationParams()):
            seen.append(chunk.text)
    assert seen and "".join(seen) in DEFAULT_TEXT
    assert info.value.code == "upstream_error"
    assert info.value.retryable is True
    assert "upstream model crashed" in info.value.message


@pytest.mark.parametrize(
    ("kind", "code", "retryable"),
    [("sensitive", "content_filtered", False), ("network_error", "upstream_error", True)],
)
async def test_zai_failure_finish_reasons_raise(
    fake: FakeOpenAIUpstream, make_model: ModelFactory, kind: str, code: str, retryable: bool
) -> None:
    fake.enqueue(f"{kind} flavor=zai")
    with pytest.raises(ProviderError) as info:
        await collect(make_model(flavor="zai"))
    assert (info.value.code, info.value.retryable) == (code, retryable)


async def test_ollama_end_without_done_after_finish_is_complete(
    fake: FakeOpenAIUpstream, make_model: ModelFactory
) -> None:
    fake.enqueue("no_done flavor=ollama")
    chunks = await collect(make_model(flavor="ollama"))
    assert text_of(chunks) == DEFAULT_TEXT
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("kind", ["cut", "truncate"])
async def test_end_before_finish_and_done_is_a_truncation(
    fake: FakeOpenAIUpstream, make_model: ModelFactory, kind: str
) -> None:
    fake.enqueue(kind)
    with pytest.raises(ProviderError) as info:
        await collect(make_model())
    assert info.value.retryable is True
    assert info.value.code in ("upstream_truncated", "upstream_disconnected")
    assert info.value.provider == "test-model"


def test_a_chunk_with_text_and_a_finish_reason_keeps_both() -> None:
    reader = ChunkReader("openai")
    text_only = reader.read('{"choices":[{"index":0,"delta":{"content":"안녕"}}]}')
    ending = reader.read('{"choices":[{"delta":{"content":"히"},"finish_reason":"length"}]}')
    assert (text_only, ending) == (Chunk("안녕"), Chunk("히"))
    assert reader.finish_reason == "length"
    with pytest.raises(ProviderError) as info:
        reader.read('{"choices":[{"delta":{"content":"바"},"finish_reason":"sensitive"}]}')
    assert info.value.code == "content_filtered"
    assert reader.read('{"choices":[{"delta":{"content":7}}]}') is None


def test_a_chunk_read_as_bytes_is_read_as_text_and_broken_utf8_is_replaced() -> None:
    reader = ChunkReader("openai")
    whole = '{"choices":[{"delta":{"content":"안녕"}}]}'.encode()
    assert reader.read(whole) == Chunk("안녕")
    assert reader.read(b'{"choices":[{"delta":{"content":"\xff!"}}]}') == Chunk("\ufffd!")
    with pytest.raises(ProviderError, match="not JSON"):
        reader.read(b"{not json")


def _text(text: str, **delta: object) -> bytes:
    choice = {"index": 0, "delta": {"content": text, **delta}, "finish_reason": None}
    return orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice]})


READS: list[list[bytes]] = [
    [_text("안"), _text("녕"), _text("하세요")],
    [b'{"choices":[{"delta":{"role":"assistant","content":""}}]}', _text("가"), _text("나")],
    [
        _text("가"),
        orjson.dumps({"choices": [{"delta": {"reasoning_content": "생각"}}]}),
        _text("나"),
    ],
    [
        b'{"choices":[{"delta":{"reasoning":"a"}}]}',
        b'{"choices":[{"delta":{"reasoning":"b"}}]}',
        _text("c"),
    ],
    [_text("끝"), b'{"choices":[{"delta":{"content":"."},"finish_reason":"stop"}]}'],
    [_text("x"), b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'],
    [_text("x"), b'{"choices":[{"delta":{"content":"y"}}],"usage":{"prompt_tokens":1}}'],
    [_text("x", role="assistant"), _text("y")],
    [
        _text("x"),
        b'{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1",'
        b'"function":{"name":"f","arguments":"{}"}}]}}]}',
        _text("y"),
    ],
    [_text("x"), b'{"error":{"message":"overloaded","code":500}}', _text("never")],
    [_text("x"), b'{"error":{"message":"x"},"choices":[{"delta":{"content":"z"}}]}'],
    [_text("x"), b'{"object":"error","message":"bad","choices":[{"delta":{"content":"z"}}]}'],
    [_text("x"), b"not json", _text("never")],
    [_text("x"), b"[1, 2]", _text("never")],
    [_text("x"), b'{"choices":{"0":1}}', _text("never")],
    [_text("x"), b'{"choices":[{"delta":"text"}]}', _text("y")],
    [_text("x"), b'{"choices":[{"delta":{"content":7}}]}', _text("y")],
    [_text("x"), b'{"choices":[{"delta":{"content":"\xff\xfe"}}]}', _text("y")],
    [b"{}", _text(""), _text("x")],
    [],
]


@pytest.mark.parametrize("payloads", READS, ids=range(len(READS)))
def test_read_events_gives_what_reading_each_event_gives(payloads: list[bytes]) -> None:
    """The fast path for plain text payloads changes nothing: chunks, error, reader state."""
    fast, slow = ChunkReader("t"), ChunkReader("t")
    chunks, error = fast.read_events(payloads)
    expected, expected_error = read_piece(slow.read, payloads, lambda: None)
    assert chunks == expected
    assert repr(error) == repr(expected_error)
    assert (fast.finish_reason, fast.usage) == (slow.finish_reason, slow.usage)
    if error is None:
        assert fast.final_chunk() == slow.final_chunk()


def test_read_events_joins_the_texts_of_one_read_into_one_chunk() -> None:
    chunks, error = ChunkReader("t").read_events([_text("대"), _text("화"), _text("!")])
    assert (chunks, error) == ([Chunk("대화!")], None)
