"""The running summary: turns that left the window, folded in after each turn.

The service schedules :meth:`Summariser.maybe_update` as a background task once a
reply is stored, so summarising never delays an answer. Each call folds the messages
newer than ``Conversation.summary_seq`` into ``Conversation.summary`` with one model
call per batch, and stores both through ``HistoryStore.update_conversation``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence

from daehwa.context.tokens import TokenCounter
from daehwa.errors import DaehwaError
from daehwa.llm.base import ChatModel, GenerationParams
from daehwa.messages import Conversation, Message, MessageStatus, Role
from daehwa.store.base import HistoryStore

log = logging.getLogger(__name__)

SUMMARY_HEADER = "지금까지의 대화 요약 (오래된 대화에서 기억할 내용):"
INSTRUCTIONS = (
    "당신은 대화 기록을 요약하는 도우미입니다. 이전 요약과 새 대화 내용을 합쳐 하나의 갱신된 "
    "요약을 한국어로 작성하세요. 사용자가 밝힌 사실(이름, 사는 곳, 직업, 취향, 알레르기, 약속, "
    "날짜와 숫자)은 빠짐없이 그대로 남기고, 잡담은 줄이세요. 요약문만 쓰고 다른 말은 하지 마세요."
)
_ROLE_LABELS = {Role.USER: "사용자", Role.ASSISTANT: "비서", Role.TOOL: "도구"}
_FOLDED = frozenset({Role.USER, Role.ASSISTANT, Role.TOOL})
_SKIPPED = frozenset({MessageStatus.BLOCKED, MessageStatus.FAILED, MessageStatus.STREAMING})
# Characters of transcript sent per model call when a backlog is folded.
BATCH_CHARS = 6_000

ModelFor = Callable[[Conversation], ChatModel]


def summary_message(summary: str) -> Message:
    """The system message that carries a summary into the model's input."""
    return Message(Role.SYSTEM, f"{SUMMARY_HEADER}\n{summary}")


def transcript(messages: Sequence[Message]) -> str:
    """Messages as ``역할: 내용`` lines, the form the summariser reads."""
    lines = []
    for message in messages:
        label = _ROLE_LABELS.get(message.role, message.role.value)
        lines.append(f"{label}: {message.content.strip()}")
    return "\n".join(lines)


class Summariser:
    """Folds messages that left the window into the conversation's summary.

    ``model_for`` gives the model that writes it (the conversation's own or a
    configured summariser). ``max_tokens`` bounds the summary; ``counter``, when
    given, enforces that bound on what the model returns.
    """

    def __init__(
        self,
        model_for: ModelFor,
        *,
        max_tokens: int = 400,
        counter: TokenCounter | None = None,
        temperature: float | None = 0.2,
    ) -> None:
        self.model_for = model_for
        self.max_tokens = max_tokens
        self.counter = counter
        self.temperature = temperature
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def pending(self, conversation: Conversation, dropped: Sequence[Message]) -> list[Message]:
        """The dropped messages the summary does not cover yet."""
        return [
            m
            for m in dropped
            if m.seq > conversation.summary_seq
            and m.role in _FOLDED
            and m.status not in _SKIPPED
            and m.content.strip()
        ]

    async def maybe_update(
        self,
        conversation: Conversation,
        dropped: Sequence[Message],
        store: HistoryStore,
    ) -> Conversation | None:
        """Fold the new ``dropped`` messages into the summary; None if nothing changed.

        Safe to run concurrently for one conversation (calls take turns). A model
        failure is logged and leaves the stored summary as it was.
        """
        if not self.pending(conversation, dropped):
            return None
        lock = self._locks.get(conversation.id)
        if lock is None:
            lock = self._locks[conversation.id] = asyncio.Lock()
        async with lock:
            # Another task may have folded some of these meanwhile: trust the store.
            current = await store.get_conversation(conversation.id) or conversation
            todo = self.pending(current, dropped)
            updated: Conversation | None = None
            for batch in _batches(todo):
                try:
                    summary = await self._fold(current, batch)
                except DaehwaError as exc:
                    log.warning("summary of conversation %s failed: %s", current.id, exc)
                    break
                current = await store.update_conversation(
                    current.id, summary=summary, summary_seq=batch[-1].seq
                )
                updated = current
            return updated

    async def _fold(self, conversation: Conversation, batch: Sequence[Message]) -> str:
        previous = conversation.summary.strip() or "(없음)"
        prompt = f"이전 요약:\n{previous}\n\n새 대화:\n{transcript(batch)}\n\n갱신된 요약:"
        messages = [Message(Role.SYSTEM, INSTRUCTIONS), Message(Role.USER, prompt)]
        params = GenerationParams(
            max_new_tokens=self.max_tokens,
            temperature=self.temperature,
            cache_key=f"summary:{conversation.id}",
        )
        model = self.model_for(conversation)
        parts: list[str] = []
        stream = model.stream(messages, params)
        try:
            async for chunk in stream:
                parts.append(chunk.text)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        return self._bound("".join(parts).strip())

    def _bound(self, summary: str) -> str:
        """Cut a summary that overran ``max_tokens`` at a sentence end."""
        if self.counter is None or self.counter.count(summary) <= self.max_tokens:
            return summary
        low, high = 0, len(summary)
        while low < high:  # the longest prefix within the bound
            mid = (low + high + 1) // 2
            if self.counter.count(summary[:mid]) <= self.max_tokens:
                low = mid
            else:
                high = mid - 1
        cut = summary[:low]
        # Prefer to end after the last full sentence, if that keeps most of the text.
        end = max(cut.rfind(". ") + 1, cut.rfind("\n"), cut.rfind("다.") + 2)
        return cut[:end].strip() if end > len(cut) // 2 else cut.strip()


def _batches(messages: Sequence[Message]) -> list[list[Message]]:
    """Split a backlog into model-sized batches, never inside a turn's user message."""
    batches: list[list[Message]] = []
    current: list[Message] = []
    size = 0
    for message in messages:
        if current and size + len(message.content) > BATCH_CHARS and message.role is Role.USER:
            batches.append(current)
            current, size = [], 0
        current.append(message)
        size += len(message.content)
    if current:
        batches.append(current)
    return batches
