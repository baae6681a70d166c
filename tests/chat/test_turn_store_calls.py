"""What one turn asks of the store: one conversation read, one append, no writes after the reply."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from daehwa.chat.runs import MemoryRunLog, RunRegistry
from daehwa.chat.service import ChatService
from daehwa.config import Settings
from daehwa.llm.base import ChatModel
from daehwa.llm.scripted import ScriptedModel
from daehwa.messages import Conversation, Message, Role, User
from daehwa.store import MemoryStore


class CountingStore(MemoryStore):
    """The in-memory store, recording the calls a turn makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.updated: list[str] = []

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        self.calls["get_conversation"] += 1
        return await super().get_conversation(conversation_id)

    async def append_message(self, message: Message) -> Message:
        self.calls["append_message"] += 1
        return await super().append_message(message)

    async def append_messages(self, messages: Sequence[Message]) -> list[Message]:
        self.calls["append_messages"] += 1
        return await super().append_messages(messages)

    async def update_message(self, message_id: str, **fields: Any) -> Message:
        self.calls["update_message"] += 1
        self.updated.append(message_id)
        return await super().update_message(message_id, **fields)


class Models(dict[str, ChatModel]):
    pass


async def test_a_turn_reads_once_appends_once_and_writes_no_token_counts_after_it() -> None:
    store = CountingStore()
    settings = Settings(
        models={"scripted": {"provider": "scripted"}}, chat={"default_model": "scripted"}
    )
    models = Models(scripted=ScriptedModel("scripted", reply="답: {input}"))
    service = ChatService(settings, store, models, RunRegistry(MemoryRunLog()))
    user = User(id="u1", name="minji")
    conversation = await service.create_conversation(user)
    replies = []
    for text in ("안녕", "오늘 날씨 어때?", "고마워"):
        store.calls.clear()
        turn = await service.send(user, conversation.id, text)
        await service.runs.wait(turn.reply_id)
        await service.aclose()  # the after-turn upkeep, if any was scheduled
        replies.append(turn.reply_id)
        assert store.calls["get_conversation"] == 1
        # The question and the empty reply are stored together, in one transaction.
        assert (store.calls["append_messages"], store.calls["append_message"]) == (1, 0)
        # The reply's final write is the only update: token counts travel with the messages.
        assert store.calls["update_message"] == 1
        assert store.updated[-1] == turn.reply_id

    page = await store.list_messages(conversation.id, limit=10)
    assert [m.role for m in page.items] == [Role.USER, Role.ASSISTANT] * 3
    for message in page.items:
        count, size = message.metadata["tokens"]["scripted"]
        assert (count > 0, size) == (True, len(message.content))
    # The next context finds every count stored: nothing left to write back.
    built = await service.next_context(user, conversation.id)
    assert built.updated == []
    assert not built.needs_upkeep
    assert service.admission.running == 0
