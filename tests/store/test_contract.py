"""The contract every store keeps; runs unchanged against each (see ``store`` in conftest)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from daehwa.errors import Conflict, InvalidInput, NotFound
from daehwa.messages import (
    Conversation,
    Message,
    MessageStatus,
    Role,
    ToolCall,
    Usage,
    User,
    new_id,
    utcnow,
)
from daehwa.store import Store
from tests.store.inventory import inventory

KST = timezone(timedelta(hours=9))


async def new_user(store: Store, name: str | None = None) -> User:
    return await store.create_user(User(id=new_id(), name=name or f"사용자-{new_id()[:8]}"))


async def new_conversation(store: Store, user_id: str, title: str = "대화") -> Conversation:
    return await store.create_conversation(Conversation(id=new_id(), user_id=user_id, title=title))


async def say(
    store: Store, conversation_id: str, text: str, role: Role = Role.USER, **fields: object
) -> Message:
    return await store.append_message(
        Message(role, text, conversation_id=conversation_id, **fields)  # type: ignore[arg-type]
    )


def assert_utc(moment: datetime) -> None:
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)


# -- conversations -------------------------------------------------------------


async def test_create_and_get_conversation(store: Store) -> None:
    conversation = Conversation(
        id=new_id(),
        user_id="u1",
        title="서울 여행 계획 ✈️",
        persona="tutor",
        variables={"언어": "한국어", "레벨": "초급"},
        model="glm-4.5",
    )
    created = await store.create_conversation(conversation)
    got = await store.get_conversation(conversation.id)
    assert got is not None
    assert got == created
    assert (got.title, got.persona, got.variables, got.model) == (
        "서울 여행 계획 ✈️",
        "tutor",
        {"언어": "한국어", "레벨": "초급"},
        "glm-4.5",
    )
    assert (got.summary, got.summary_seq) == ("", 0)
    assert_utc(got.created_at)
    assert_utc(got.updated_at)
    assert await store.get_conversation(new_id()) is None
    with pytest.raises(Conflict):
        await store.create_conversation(conversation)


async def test_list_conversations_newest_first_with_cursors(store: Store) -> None:
    made = [await new_conversation(store, "u1", f"대화 {i}") for i in range(5)]
    await new_conversation(store, "someone-else")
    # Talking in the oldest moves it to the front.
    await say(store, made[0].id, "다시 왔어요")
    expected = [made[0].id, made[4].id, made[3].id, made[2].id, made[1].id]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.list_conversations("u1", limit=2, before=cursor)
        assert len(page.items) <= 2
        seen.extend(c.id for c in page.items)
        pages += 1
        cursor = page.next
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3

    everything = await store.list_conversations("u1", limit=10)
    assert [c.id for c in everything.items] == expected
    assert everything.next is None
    assert (await store.list_conversations("nobody")).items == []
    with pytest.raises(InvalidInput):
        await store.list_conversations("u1", before="not a cursor")
    with pytest.raises(InvalidInput):
        await store.list_conversations("u1", limit=0)


async def test_update_conversation(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    updated = await store.update_conversation(
        conversation.id,
        title="새 제목",
        summary="사용자는 부산 날씨를 물었다.",
        summary_seq=4,
        variables={"상황": "공항"},
        model="hcx-003",
    )
    assert (updated.title, updated.summary, updated.summary_seq) == (
        "새 제목",
        "사용자는 부산 날씨를 물었다.",
        4,
    )
    assert (updated.variables, updated.model) == ({"상황": "공항"}, "hcx-003")
    assert updated.updated_at > conversation.updated_at
    assert await store.get_conversation(conversation.id) == updated
    with pytest.raises(InvalidInput):
        await store.update_conversation(conversation.id, user_id="thief")
    with pytest.raises(NotFound):
        await store.update_conversation(new_id(), title="x")


async def test_delete_conversation(store: Store) -> None:
    kept = await new_conversation(store, "u1")
    gone = await new_conversation(store, "u1")
    message = await say(store, gone.id, "지워질 메시지")
    await say(store, kept.id, "남을 메시지")
    await store.delete_conversation(gone.id)
    assert await store.get_conversation(gone.id) is None
    assert await store.get_message(message.id) is None
    assert (await store.list_messages(gone.id)).items == []
    assert [c.id for c in (await store.list_conversations("u1")).items] == [kept.id]
    await store.delete_conversation(gone.id)  # a second delete is harmless
    assert len((await store.list_messages(kept.id)).items) == 1


async def test_clear_conversation(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    for text in ("하나", "둘", "셋"):
        await say(store, conversation.id, text)
    await store.update_conversation(conversation.id, summary="요약", summary_seq=2)
    await store.clear_conversation(conversation.id)
    cleared = await store.get_conversation(conversation.id)
    assert cleared is not None
    assert (cleared.summary, cleared.summary_seq, cleared.title) == ("", 0, "대화")
    assert (await store.list_messages(conversation.id)).items == []
    assert await store.last_message(conversation.id) is None
    # seq keeps counting, so an old "before" cursor can never show new messages.
    after = await say(store, conversation.id, "넷")
    assert after.seq == 4
    assert [m.seq for m in (await store.list_messages(conversation.id)).items] == [4]


# -- messages ----------------------------------------------------------------


async def test_append_assigns_seq_and_times(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    appended = [await say(store, conversation.id, f"메시지 {i}") for i in range(1, 6)]
    assert [m.seq for m in appended] == [1, 2, 3, 4, 5]
    assert all(m.id and m.conversation_id == conversation.id for m in appended)
    assert len({m.id for m in appended}) == 5
    for earlier, later in itertools.pairwise(appended):
        assert later.created_at > earlier.created_at
    assert_utc(appended[0].created_at)
    stored = await store.get_conversation(conversation.id)
    assert stored is not None
    assert stored.updated_at >= appended[-1].created_at
    assert await store.get_message(appended[2].id) == appended[2]

    with pytest.raises(NotFound):
        await say(store, new_id(), "없는 대화")
    with pytest.raises(Conflict):
        await say(store, conversation.id, "같은 id", id=appended[0].id)
    # A refused append does not use up a seq.
    assert (await say(store, conversation.id, "다음")).seq == 6


async def test_append_messages_stores_a_turn_in_one_go(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    first = await say(store, conversation.id, "처음")
    question = Message(Role.USER, "부산 날씨는?", conversation_id=conversation.id, request_id="r1")
    reply = Message(
        Role.ASSISTANT,
        "",
        conversation_id=conversation.id,
        status=MessageStatus.STREAMING,
        model="m",
        metadata={"tokens": 3},
    )
    stored = await store.append_messages([question, reply])
    assert [m.seq for m in stored] == [2, 3]
    assert [m.content for m in stored] == ["부산 날씨는?", ""]
    assert (stored[0].request_id, stored[1].status, stored[1].model) == (
        "r1",
        MessageStatus.STREAMING,
        "m",
    )
    assert stored[1].metadata == {"tokens": 3}
    assert all(m.id for m in stored) and stored[0].id != stored[1].id
    assert first.created_at < stored[0].created_at < stored[1].created_at
    for message in stored:
        assert await store.get_message(message.id) == message
    assert (await store.list_messages(conversation.id)).items == [first, *stored]
    assert await store.find_by_request_id(conversation.id, "r1") == stored[0]
    again = await store.get_conversation(conversation.id)
    assert again is not None
    assert again.updated_at >= stored[1].created_at
    assert await store.append_messages([]) == []
    assert (await say(store, conversation.id, "다음")).seq == 4


async def test_append_messages_across_conversations(store: Store) -> None:
    one = await new_conversation(store, "u1")
    two = await new_conversation(store, "u1")
    await say(store, two.id, "먼저")
    stored = await store.append_messages(
        [
            Message(Role.USER, "가", conversation_id=one.id),
            Message(Role.USER, "나", conversation_id=two.id),
            Message(Role.ASSISTANT, "다", conversation_id=one.id),
        ]
    )
    assert [(m.conversation_id, m.seq, m.content) for m in stored] == [
        (one.id, 1, "가"),
        (two.id, 2, "나"),
        (one.id, 2, "다"),
    ]
    assert [m.content for m in (await store.list_messages(one.id)).items] == ["가", "다"]
    assert [m.content for m in (await store.list_messages(two.id)).items] == ["먼저", "나"]


async def test_append_messages_stores_all_or_nothing(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    other = await new_conversation(store, "u1")
    existing = await say(store, conversation.id, "있던 메시지")
    before_one = await inventory(store)

    def fresh(conversation_id: str, text: str, **fields: object) -> Message:
        return Message(Role.USER, text, conversation_id=conversation_id, **fields)  # type: ignore[arg-type]

    with pytest.raises(Conflict):
        await store.append_messages(
            [fresh(conversation.id, "새 메시지"), fresh(conversation.id, "중복", id=existing.id)]
        )
    twice = new_id()
    with pytest.raises(Conflict):
        await store.append_messages(
            [fresh(conversation.id, "하나", id=twice), fresh(conversation.id, "둘", id=twice)]
        )
    with pytest.raises(NotFound):
        await store.append_messages([fresh(other.id, "남의 대화"), fresh(new_id(), "없는 대화")])
    assert await inventory(store) == before_one
    assert [m.seq for m in (await store.list_messages(conversation.id)).items] == [1]
    assert (await store.list_messages(other.id)).items == []
    # Refused batches used up no seq.
    assert [m.seq for m in await store.append_messages([fresh(conversation.id, "다음")])] == [2]


async def test_concurrent_batches_keep_their_seqs_together(store: Store) -> None:
    conversation = await new_conversation(store, "u1")

    async def turn(n: int) -> list[Message]:
        return await store.append_messages(
            [
                Message(Role.USER, f"질문 {n}", conversation_id=conversation.id),
                Message(Role.ASSISTANT, f"답 {n}", conversation_id=conversation.id),
            ]
        )

    turns = await asyncio.gather(
        *(turn(n) for n in range(20)), say(store, conversation.id, "끼어들기")
    )
    batches = turns[:-1]
    assert all(isinstance(b, list) and b[1].seq == b[0].seq + 1 for b in batches)
    page = await store.list_messages(conversation.id, limit=100)
    assert [m.seq for m in page.items] == list(range(1, 42))
    by_seq = {m.seq: m.content for m in page.items}
    for batch in batches:
        assert isinstance(batch, list)
        assert by_seq[batch[0].seq].replace("질문", "답") == by_seq[batch[1].seq]


async def test_list_messages_pages_newest_first(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    for i in range(1, 8):
        await say(store, conversation.id, f"메시지 {i}", Role.USER if i % 2 else Role.ASSISTANT)

    first = await store.list_messages(conversation.id, limit=3)
    assert [m.seq for m in first.items] == [5, 6, 7]
    assert first.next == "5"
    second = await store.list_messages(conversation.id, limit=3, before=int(first.next))
    assert [m.seq for m in second.items] == [2, 3, 4]
    assert second.next == "2"
    last = await store.list_messages(conversation.id, limit=3, before=int(second.next))
    assert [m.seq for m in last.items] == [1]
    assert last.next is None
    whole = await store.list_messages(conversation.id, limit=7)
    assert [m.content for m in whole.items] == [f"메시지 {i}" for i in range(1, 8)]
    assert whole.next is None
    assert whole.items[1].role is Role.ASSISTANT
    assert (await store.list_messages(new_id())).items == []
    with pytest.raises(InvalidInput):
        await store.list_messages(conversation.id, limit=0)


async def test_list_messages_since(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    appended = [await say(store, conversation.id, f"메시지 {i}") for i in range(1, 8)]
    since = appended[3].created_at.astimezone(KST)  # any timezone means the same instant

    page = await store.list_messages(conversation.id, limit=2, since=since)
    assert [m.seq for m in page.items] == [4, 5]
    assert page.next is not None
    page = await store.list_messages(
        conversation.id, limit=2, since=datetime.fromisoformat(page.next)
    )
    assert [m.seq for m in page.items] == [6, 7]
    assert page.next is None
    future = utcnow() + timedelta(days=1)
    assert (await store.list_messages(conversation.id, since=future)).items == []
    everything = await store.list_messages(conversation.id, since=datetime(2000, 1, 1, tzinfo=UTC))
    assert [m.seq for m in everything.items] == list(range(1, 8))


async def test_update_message_round_trips_json(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    reply = await say(
        store, conversation.id, "", Role.ASSISTANT, status=MessageStatus.STREAMING, model="m"
    )
    assert reply.status is MessageStatus.STREAMING
    calls = [
        ToolCall(
            "call_1", "날씨", {"도시": "부산", "단위": "섭씨", "옵션": [], "중첩": {"a": [1, 2.5]}}
        ),
        ToolCall("call_2", "search", {"q": "맛집 🍜", "empty": {}}),
    ]
    updated = await store.update_message(
        reply.id,
        content='부산은 맑아요 ☀️ "따옴표" \\ 백슬래시\n줄바꿈',
        status=MessageStatus.COMPLETE,
        usage=Usage(prompt_tokens=12, completion_tokens=34),
        tool_calls=calls,
        metadata={"출처": ["기상청"], "score": 0.5, "nested": {"ok": True, "none": None}},
    )
    assert updated.content == '부산은 맑아요 ☀️ "따옴표" \\ 백슬래시\n줄바꿈'
    assert updated.status is MessageStatus.COMPLETE
    assert updated.usage == Usage(12, 34)
    assert updated.tool_calls == calls
    assert updated.metadata == {
        "출처": ["기상청"],
        "score": 0.5,
        "nested": {"ok": True, "none": None},
    }
    assert (updated.seq, updated.created_at, updated.model) == (reply.seq, reply.created_at, "m")
    assert await store.get_message(reply.id) == updated
    assert (await store.list_messages(conversation.id)).items == [updated]

    partial = await store.update_message(reply.id, content="바뀐 내용만")
    assert partial.tool_calls == calls
    assert partial.usage == Usage(12, 34)
    assert partial.status is MessageStatus.COMPLETE

    tool = await say(
        store, conversation.id, '{"온도": 21}', Role.TOOL, tool_call_id="call_1", request_id="r"
    )
    assert (await store.get_message(tool.id)) == tool
    assert tool.tool_call_id == "call_1"
    with pytest.raises(NotFound):
        await store.update_message(new_id(), content="없음")
    assert await store.get_message(new_id()) is None


async def test_find_by_request_id(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    other = await new_conversation(store, "u1")
    question = await say(store, conversation.id, "질문", request_id="req-1")
    await say(store, conversation.id, "답", Role.ASSISTANT, request_id="req-1")
    await say(store, other.id, "다른 대화", request_id="req-2")
    assert await store.find_by_request_id(conversation.id, "req-1") == question
    assert await store.find_by_request_id(conversation.id, "req-2") is None
    assert await store.find_by_request_id(other.id, "req-1") is None


async def test_last_message(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    assert await store.last_message(conversation.id) is None
    await say(store, conversation.id, "처음")
    last = await say(store, conversation.id, "마지막", Role.ASSISTANT)
    assert await store.last_message(conversation.id) == last
    assert await store.last_message(new_id()) is None


async def test_mark_interrupted(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    done = await say(store, conversation.id, "완료", Role.ASSISTANT)
    running = [
        await say(store, conversation.id, "작성 중", Role.ASSISTANT, status=MessageStatus.STREAMING)
        for _ in range(2)
    ]
    finished = await say(store, conversation.id, "", Role.ASSISTANT, status=MessageStatus.STREAMING)
    await store.update_message(finished.id, status=MessageStatus.COMPLETE)
    assert await store.mark_interrupted() == 2
    for message in running:
        stored = await store.get_message(message.id)
        assert stored is not None
        assert stored.status is MessageStatus.INCOMPLETE
        assert stored.content == "작성 중"
    for message in (done, finished):
        stored = await store.get_message(message.id)
        assert stored is not None
        assert stored.status is MessageStatus.COMPLETE
    assert await store.mark_interrupted() == 0


async def test_mark_interrupted_only_the_given_ids(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    mine, theirs, done = [
        await say(store, conversation.id, "작성 중", Role.ASSISTANT, status=MessageStatus.STREAMING)
        for _ in range(3)
    ]
    await store.update_message(done.id, status=MessageStatus.COMPLETE)
    assert await store.mark_interrupted([]) == 0
    # A finished reply and an unknown id are left alone and not counted.
    assert await store.mark_interrupted([mine.id, done.id, new_id()]) == 1
    statuses = {}
    for message in (mine, theirs, done):
        stored = await store.get_message(message.id)
        assert stored is not None
        statuses[message.id] = stored.status
    assert statuses == {
        mine.id: MessageStatus.INCOMPLETE,
        theirs.id: MessageStatus.STREAMING,
        done.id: MessageStatus.COMPLETE,
    }
    assert await store.mark_interrupted({mine.id}) == 0
    assert await store.streaming_replies(created_before=utcnow() + timedelta(days=1)) == [theirs.id]
    assert await store.mark_interrupted() == 1
    assert await store.streaming_replies(created_before=utcnow() + timedelta(days=1)) == []


async def test_streaming_replies_before_a_time(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    other = await new_conversation(store, "u2")
    old = await say(store, conversation.id, "", Role.ASSISTANT, status=MessageStatus.STREAMING)
    await say(store, conversation.id, "질문")
    older_elsewhere = await say(store, other.id, "", Role.ASSISTANT, status=MessageStatus.STREAMING)
    finished = await say(store, other.id, "", Role.ASSISTANT, status=MessageStatus.STREAMING)
    await store.update_message(finished.id, status=MessageStatus.COMPLETE)
    new = await say(store, conversation.id, "", Role.ASSISTANT, status=MessageStatus.STREAMING)

    assert await store.streaming_replies(created_before=old.created_at) == []
    # Strictly before: a reply created at the bound itself is not included.
    assert sorted(await store.streaming_replies(created_before=new.created_at)) == sorted(
        [old.id, older_elsewhere.id]
    )
    # Any timezone names the same instant.
    later = (new.created_at + timedelta(microseconds=1)).astimezone(KST)
    assert sorted(await store.streaming_replies(created_before=later)) == sorted(
        [old.id, older_elsewhere.id, new.id]
    )
    await store.update_message(old.id, status=MessageStatus.COMPLETE)
    assert sorted(await store.streaming_replies(created_before=later)) == sorted(
        [older_elsewhere.id, new.id]
    )
    await store.delete_conversation(other.id)
    assert await store.streaming_replies(created_before=later) == [new.id]


async def test_concurrent_appends_get_distinct_seqs(store: Store) -> None:
    conversation = await new_conversation(store, "u1")
    appended = await asyncio.gather(*(say(store, conversation.id, f"동시 {i}") for i in range(50)))
    assert sorted(m.seq for m in appended) == list(range(1, 51))
    page = await store.list_messages(conversation.id, limit=100)
    assert [m.seq for m in page.items] == list(range(1, 51))
    assert sorted(m.content for m in page.items) == sorted(f"동시 {i}" for i in range(50))
    # Commit order is seq order, so times grow with seq as well.
    times = [m.created_at for m in page.items]
    assert times == sorted(times)


async def test_search_messages_in_korean(store: Store) -> None:
    me = await new_user(store)
    other = await new_user(store)
    first = await new_conversation(store, me.id)
    second = await new_conversation(store, me.id)
    theirs = await new_conversation(store, other.id)
    old = await say(store, first.id, "서울 날씨 알려줘")
    await say(store, first.id, "부산은?")
    await say(store, theirs.id, "서울 맛집 추천")
    new = await say(store, second.id, "내일 서울에서 Python 모임", Role.ASSISTANT)
    await say(store, second.id, "100% 확실해요")

    found = await store.search_messages(me.id, "서울")
    assert [m.id for m in found] == [new.id, old.id]
    assert [m.id for m in await store.search_messages(me.id, "서울", limit=1)] == [new.id]
    assert [m.id for m in await store.search_messages(me.id, "python")] == [new.id]
    assert [m.content for m in await store.search_messages(me.id, "0%")] == ["100% 확실해요"]
    assert await store.search_messages(me.id, "_") == []
    assert await store.search_messages(me.id, "대구") == []
    assert [m.content for m in await store.search_messages(other.id, "서울")] == ["서울 맛집 추천"]
    with pytest.raises(InvalidInput):
        await store.search_messages(me.id, "  ")


# -- users and credentials -----------------------------------------------------


async def test_users(store: Store) -> None:
    kim = await store.create_user(
        User(id=new_id(), name="김철수", is_admin=True, password_hash="h")
    )
    lee = await new_user(store, "이영희")
    assert await store.get_user(kim.id) == kim
    assert await store.get_user_by_name("이영희") == lee
    assert await store.get_user(new_id()) is None
    assert await store.get_user_by_name("없는 사람") is None
    assert {u.id for u in await store.list_users()} == {kim.id, lee.id}
    assert (kim.is_admin, kim.password_hash) == (True, "h")
    assert_utc((await store.list_users())[0].created_at)
    with pytest.raises(Conflict):
        await new_user(store, "김철수")


async def test_credentials(store: Store) -> None:
    user = await new_user(store)
    await store.add_key(user.id, "api-hash")
    await store.add_key(
        user.id, "session-hash", kind="session", expires_at=utcnow() + timedelta(hours=1)
    )
    await store.add_key(
        user.id, "expired-hash", kind="login", expires_at=utcnow() - timedelta(seconds=1)
    )
    assert await store.user_for_key("api-hash") == user
    assert await store.user_for_key("session-hash", kind="session") == user
    assert await store.user_for_key("session-hash") is None  # wrong kind
    assert await store.user_for_key("api-hash", kind="session") is None
    assert await store.user_for_key("expired-hash", kind="login") is None
    assert await store.user_for_key("unknown") is None
    await store.revoke_key("api-hash")
    assert await store.user_for_key("api-hash") is None
    await store.revoke_key("unknown")  # harmless
    with pytest.raises(Conflict):
        await store.add_key(user.id, "session-hash")
    with pytest.raises(NotFound):
        await store.add_key(new_id(), "orphan-hash")
    with pytest.raises(InvalidInput):
        await store.add_key(user.id, "odd-hash", kind="cookie")


async def test_delete_user_leaves_nothing(store: Store) -> None:
    keeper = await new_user(store)
    kept = await new_conversation(store, keeper.id)
    await say(store, kept.id, "남아야 할 메시지", request_id="k1")
    await store.add_key(keeper.id, "keeper-key")
    before = await inventory(store)

    leaver = await new_user(store)
    await store.add_key(leaver.id, "leaver-key")
    await store.add_key(
        leaver.id, "leaver-session", kind="session", expires_at=utcnow() + timedelta(days=1)
    )
    for n in range(2):
        conversation = await new_conversation(store, leaver.id)
        await say(store, conversation.id, f"질문 {n}", request_id=f"r{n}")
        await say(store, conversation.id, "", Role.ASSISTANT, status=MessageStatus.STREAMING)
        await store.update_conversation(conversation.id, summary="요약", summary_seq=1)
    assert await inventory(store) != before

    await store.delete_user(leaver.id)
    assert await inventory(store) == before
    assert await store.get_user(leaver.id) is None
    assert await store.user_for_key("leaver-key") is None
    assert (await store.list_conversations(leaver.id)).items == []
    assert await store.user_for_key("keeper-key") == keeper
    assert len((await store.list_messages(kept.id)).items) == 1
    await store.delete_user(leaver.id)  # a second delete is harmless
