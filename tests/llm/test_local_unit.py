"""The local provider's parts that need no model: request body, errors, slots, admission."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from daehwa.config import ChatSettings, ModelSettings, Settings
from daehwa.errors import Busy, ConfigError, ContextOverflow, ProviderError
from daehwa.llm.base import ChatModel, GenerationParams, ToolSpec
from daehwa.llm.local import LocalModel, _SlotPool, _ToolCallJoiner, error_from, wire_messages
from daehwa.llm.modelfiles import KNOWN_MODELS, LocalOptions, ModelFileError
from daehwa.messages import Message, Role, ToolCall

QWEN = KNOWN_MODELS["qwen2.5-coder-1.5b-instruct-q4"]


def test_is_a_chat_model() -> None:
    assert isinstance(LocalModel("m", Path("x.gguf")), ChatModel)


def test_wire_messages_carry_tool_calls_and_results() -> None:
    messages = [
        Message(Role.SYSTEM, "규칙"),
        Message(Role.ASSISTANT, "", tool_calls=[ToolCall("c1", "weather", {"city": "부산"})]),
        Message(Role.TOOL, "맑음", tool_call_id="c1"),
    ]
    assert wire_messages(messages) == [
        {"role": "system", "content": "규칙"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "\\ubd80\\uc0b0"}'},
                }
            ],
        },
        {"role": "tool", "content": "맑음", "tool_call_id": "c1"},
    ]


def test_request_uses_model_sampling_then_config_then_call() -> None:
    model = LocalModel(
        "m", Path("x.gguf"), options=LocalOptions(top_k=5), temperature=0.3, known=QWEN
    )
    body = model.request(
        [Message(Role.USER, "안녕")],
        GenerationParams(max_new_tokens=7, stop=("끝",), tools=(ToolSpec("t", "d", {}),)),
    )
    assert body["max_tokens"] == 7 and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["return_progress"] is True and body["cache_prompt"] is True
    assert (body["top_k"], body["top_p"], body["temperature"]) == (5, 0.8, 0.3)
    assert body["stop"] == ["끝"]
    assert body["tools"][0]["function"] == {"name": "t", "description": "d", "parameters": {}}
    override = model.request([Message(Role.USER, "x")], GenerationParams(temperature=0.0))
    assert override["temperature"] == 0.0 and "stop" not in override and "tools" not in override


def test_errors_are_translated() -> None:
    overflow = error_from(
        {"code": 400, "type": "exceed_context_size_error", "message": "request (424 tokens)"}, "m"
    )
    assert isinstance(overflow, ContextOverflow) and "424 tokens" in overflow.message
    bad = error_from({"code": 400, "type": "invalid_request_error", "message": "nope"}, "m")
    assert isinstance(bad, ProviderError) and not bad.retryable and bad.upstream_status == 400
    busy = error_from({"code": 503, "type": "unavailable_error", "message": "Loading model"}, "m")
    assert isinstance(busy, ProviderError) and busy.retryable and busy.provider == "m"


def test_tool_call_pieces_are_joined_by_index() -> None:
    joiner = _ToolCallJoiner()
    joiner.add(
        [{"index": 0, "id": "a", "type": "function", "function": {"name": "get", "arguments": ""}}]
    )
    joiner.add([{"index": 1, "id": "b", "function": {"name": "put", "arguments": '{"k"'}}])
    joiner.add([{"index": 0, "function": {"arguments": '{"city": '}}])
    joiner.add(
        [
            {"index": 0, "function": {"arguments": '"서울"}'}},
            {"index": 1, "function": {"arguments": ": 1}"}},
        ]
    )
    assert joiner.calls() == [
        ToolCall("a", "get", {"city": "서울"}),
        ToolCall("b", "put", {"k": 1}),
    ]


async def test_slot_pool_gives_a_conversation_its_slot_back() -> None:
    pool = _SlotPool(2)
    first = await pool.take("conv-a")
    second = await pool.take("conv-b")
    pool.give_back(first)
    pool.give_back(second)
    assert await pool.take("conv-b") == second
    assert await pool.take("conv-a") == first


async def test_slot_pool_queues_in_order_and_survives_cancelled_waiters() -> None:
    pool = _SlotPool(1)
    slot = await pool.take(None)
    cancelled = asyncio.create_task(pool.take("x"))
    waiting = asyncio.create_task(pool.take("y"))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    pool.give_back(slot)
    assert await asyncio.wait_for(waiting, 1) == slot
    pool.give_back(slot)
    assert await asyncio.wait_for(pool.take(None), 1) == slot


async def test_requests_beyond_slots_and_queue_are_busy() -> None:
    """One generating (here: stuck loading), one waiting, the third is refused at once."""
    release = threading.Event()

    def slow_file() -> Path:
        release.wait(10)
        raise ModelFileError("model file went away")

    model = LocalModel("m", slow_file, options=LocalOptions(slots=1, queue=1))
    messages = [Message(Role.USER, "안녕")]

    async def drain() -> None:
        async for _ in model.stream(messages, GenerationParams()):
            pass

    first = asyncio.create_task(drain())
    second = asyncio.create_task(drain())
    for _ in range(500):  # both admitted: one loading, one waiting for the load
        if model.pending == 2:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(Busy, match="busy"):
        await drain()
    release.set()
    for task in (first, second):
        with pytest.raises(ProviderError, match="model file went away") as info:
            await task
        assert info.value.code == "model_unavailable"
        assert isinstance(info.value.__cause__, ModelFileError)
    assert model.pending == 0
    await model.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await drain()


def test_from_settings_fails_fast_on_bad_config(tmp_path: Path) -> None:
    settings = Settings(
        models={"l": ModelSettings(provider="local", model="no-such-model")},
        chat=ChatSettings(default_model="l"),
    )
    with pytest.raises(ConfigError, match="not a known local model"):
        LocalModel.from_settings(settings, "l")


def test_slot_given_back_from_a_thread_after_its_loop_closed_is_kept() -> None:
    """Regression: a worker finishing after the taker's loop closed lost the slot."""
    pool = _SlotPool(1)
    slot = asyncio.run(pool.take("a"))
    worker = threading.Thread(target=pool.give_back, args=(slot,))
    worker.start()
    worker.join()
    assert asyncio.run(asyncio.wait_for(pool.take("b"), 1)) == slot


def test_waiter_of_a_closed_loop_does_not_swallow_the_slot() -> None:
    pool = _SlotPool(1)
    slot = asyncio.run(pool.take(None))
    dead = asyncio.new_event_loop()
    orphan: asyncio.Future[int] = dead.create_future()
    pool._waiters.append(orphan)  # a request waiting on a loop that is then gone
    dead.close()
    pool.give_back(slot)
    assert asyncio.run(asyncio.wait_for(pool.take(None), 1)) == slot
    assert not orphan.done()
