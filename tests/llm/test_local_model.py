"""The local provider on a real GGUF: Gemma 3 270M (base) from its PyPI part packages.

One model is loaded for the module (a few seconds). It is a base model, so the
tests check the plumbing (streaming, stop, usage, prefix reuse, exact counts),
not the quality of answers. ``make test`` installs the part packages; without
them these tests are skipped, unless ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daehwa.config import ChatSettings, ModelSettings, ServerSettings, Settings
from daehwa.context.tokens_local import LocalTokenCounter, counter_for_local
from daehwa.llm.base import Chunk, GenerationParams
from daehwa.llm.local import LocalModel
from daehwa.llm.modelfiles import KNOWN_MODELS, ModelFileError, part_paths, prepare_models
from daehwa.messages import Message, Role

pytestmark = pytest.mark.slow

GEMMA = KNOWN_MODELS["gemma3-270m-q4"]
SYSTEM = Message(Role.SYSTEM, "당신은 친절한 비서입니다.")


def _settings(data_dir: Path) -> Settings:
    config = ModelSettings(
        provider="local",
        model=GEMMA.id,
        context_window=1024,
        # One thread: steady on a shared 2-core runner; two slots to test slot reuse.
        options={"threads": 1, "slots": 2, "queue": 2, "batch": 32},
    )
    return Settings(
        models={"gemma": config},
        chat=ChatSettings(default_model="gemma"),
        server=ServerSettings(data_dir=data_dir),
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    try:
        part_paths(GEMMA)
    except ModelFileError as exc:
        reason = f"the Gemma test model is not installed ({exc.message})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    config = _settings(tmp_path_factory.mktemp("data"))
    prepare_models(config)
    return config


@pytest.fixture(scope="module")
def model(settings: Settings) -> Iterator[LocalModel]:
    local = LocalModel.from_settings(settings, "gemma")
    asyncio.run(local.start())
    yield local
    asyncio.run(local.aclose())


@pytest.fixture(scope="module")
def counter(settings: Settings) -> LocalTokenCounter:
    found = counter_for_local(settings.models["gemma"])
    assert found is not None
    return found


async def generate(model: LocalModel, messages: list[Message], **params: object) -> list[Chunk]:
    options = {"max_new_tokens": 6, "temperature": 0.0, **params}
    return [c async for c in model.stream(messages, GenerationParams(**options))]  # type: ignore[arg-type]


async def test_streams_an_answer_with_usage(model: LocalModel, counter: LocalTokenCounter) -> None:
    messages = [SYSTEM, Message(Role.USER, "하늘은 왜 파란가요?")]
    chunks = await generate(model, messages, max_new_tokens=8)
    assert "".join(c.text for c in chunks).strip()
    assert all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length") and last.usage is not None
    assert 0 < last.usage.completion_tokens <= 8
    assert last.usage.prompt_tokens == counter.count_messages(messages)


async def test_max_new_tokens_cuts_the_reply(model: LocalModel) -> None:
    chunks = await generate(model, [Message(Role.USER, "1, 2, 3, 4, 5,")], max_new_tokens=3)
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_stop_mid_generation_frees_the_model(model: LocalModel) -> None:
    before = await model.runtime_metrics()
    stream = model.stream(
        [Message(Role.USER, "Count to one hundred: 1, 2, 3,")],
        GenerationParams(max_new_tokens=300, temperature=0.0),
    )
    seen = 0
    async for chunk in stream:
        seen += bool(chunk.text)
        if seen == 2:
            break
    await stream.aclose()
    await asyncio.wait_for(generate(model, [Message(Role.USER, "안녕")]), 120)
    after = await model.runtime_metrics()
    assert model.pending == 0
    # Nothing is still generating, and the stopped reply decoded only a few more tokens
    # (it would have decoded up to 300).
    assert after["requests_processing"] == 0
    assert after["n_decode_total"] - before["n_decode_total"] < 60


async def test_event_loop_stays_responsive_while_generating(model: LocalModel) -> None:
    """A /healthz-like coroutine keeps answering within 50 ms during generation."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal worst
        while not done.is_set():
            start = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - start - 0.005)

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    chunks = await generate(
        model, [SYSTEM, Message(Role.USER, "긴 이야기를 들려주세요.")], max_new_tokens=24
    )
    done.set()
    await beat
    assert chunks[-1].usage is not None
    assert time.perf_counter() - started > 0.1  # the model really worked meanwhile
    assert worst < 0.05, f"event loop blocked for {worst * 1000:.0f} ms"


async def test_follow_up_turn_reads_only_new_tokens(model: LocalModel) -> None:
    history = [SYSTEM, Message(Role.USER, "서울의 유명한 장소를 하나 알려주세요. " * 6)]
    first = await generate(model, history, cache_key="conv-1")
    assert first[-1].usage is not None
    # Another conversation in between: the slot pool keeps conv-1's cache apart.
    await generate(model, [SYSTEM, Message(Role.USER, "다른 대화입니다. " * 6)], cache_key="conv-2")
    history += [Message(Role.ASSISTANT, "".join(c.text for c in first)), Message(Role.USER, "더요")]
    second = await generate(model, history, cache_key="conv-1")
    assert second[-1].usage is not None and model.last_timings is not None
    cached, read = model.last_timings["cache_n"], model.last_timings["prompt_n"]
    assert cached >= first[-1].usage.prompt_tokens - 8
    assert read < second[-1].usage.prompt_tokens - cached + 8
    assert cached + read == second[-1].usage.prompt_tokens


CORPUS = [
    "안녕하세요! 오늘 서울 날씨는 맑고 기온은 23°C입니다.",
    "def f(x):\n    return x ** 2  # 제곱\n\n\n\tprint(f(3))",
    "emoji 😀🎉👍🏽, CJK 漢字 かな, Ａ　全角, nbsp\u00a0here",
    "   leading and trailing   ",
    "<start_of_turn>user\nhi<end_of_turn>\n</s> <bos>",
    "ㅋㅋㅋ ㅎㅎ 헐!!!?? https://example.com/검색?q=1&x=2",
]


async def test_token_counts_match_the_runtime(
    model: LocalModel, counter: LocalTokenCounter
) -> None:
    server = model._server
    for text in CORPUS:
        reply = await asyncio.to_thread(
            server.handle_completions, {"prompt": text, "max_tokens": 1}
        )
        ours = len(counter.load().encode(text, add_bos=True))
        assert ours == reply["usage"]["prompt_tokens"], text


async def test_message_counts_match_the_runtime(
    model: LocalModel, counter: LocalTokenCounter
) -> None:
    conversation = [
        SYSTEM,
        Message(Role.USER, "부산은 어때요?"),
        Message(Role.ASSISTANT, "부산은 바다가 아름다워요.\n\n해운대가 유명합니다."),
        Message(Role.USER, CORPUS[2]),
    ]
    for end in (2, 4):
        chunks = await generate(model, conversation[:end], max_new_tokens=1)
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens == counter.count_messages(conversation[:end])
