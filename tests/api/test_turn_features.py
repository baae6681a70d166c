"""Guard, personas, tools, export, search and deletion through the real HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from daehwa.llm.base import Chunk, GenerationParams
from daehwa.messages import Message, Role, ToolCall, Usage
from tests.api.conftest import ServerFactory
from tests.api.models import SlowModel
from tests.api.test_turns import history, new_conversation
from tests.fakes.weather_service import FakeWeatherService, weather_plan


class PlannedModel:
    """Calls the weather tool when the conversation asks for it (see ``weather_plan``)."""

    name = "planned"

    def __init__(self) -> None:
        self.seen: list[list[Message]] = []

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        self.seen.append(list(messages))
        users = [m.content for m in messages if m.role is Role.USER]
        result = messages[-1].content if messages[-1].role is Role.TOOL else None
        move, value = weather_plan(users, result)
        if move == "call" and params.tools:
            call = ToolCall(f"call_{len(self.seen)}", "get_weather", {"city": value})
            yield Chunk(tool_calls=[call], finish_reason="tool_calls", usage=Usage(5, 1))
            return
        for piece in value.split(" "):
            yield Chunk(text=piece + " ")
        yield Chunk(finish_reason="stop", usage=Usage(5, 3))

    async def aclose(self) -> None:
        return None


def words_file(tmp_path: Path) -> str:
    path = tmp_path / "words.txt"
    path.write_text("# 금칙어\n바보\nidiot\n", encoding="utf-8")
    return str(path)


async def test_a_blocked_message_is_stored_blocked_and_refused(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await make_server(guard={"words_files": [words_file(tmp_path)]})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    path = f"/v1/conversations/{cid}/messages"
    reply = await server.stream("POST", path, me, json={"content": "너 바 보 같아"})
    assert [kind for kind, _, _ in reply.events] == ["error"]
    assert reply.of("error")[0]["code"] == "content_blocked"
    status, data = await server.call("POST", path, me, json={"content": "IDIOT!"})
    assert (status, data["error"]["code"]) == (422, "content_blocked")
    stored = await history(server, me, cid)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "blocked"), ("user", "blocked")]
    status, _ = await server.call("POST", path, me, json={"content": "좋은 하루"})
    assert status == 200


async def test_output_is_masked_even_split_across_chunks(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    model = SlowModel(["그건 ", "바", ".", "보", " 같은 ", "생각"])
    server = await make_server({"slow": model}, guard={"words_files": [words_file(tmp_path)]})
    me = await server.user("minji")
    cid = await new_conversation(server, me)
    reply = await server.stream(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "어때?"}
    )
    assert "바" not in reply.text and "***" in reply.text
    stored = await history(server, me, cid)
    assert stored[1]["content"] == reply.text


PERSONA = {
    "tutor": {
        "title": "언어 선생님",
        "system_prompt": "당신은 {언어} 선생님입니다. 학생 수준은 {레벨}입니다.",
        "first_message": "안녕하세요! {언어} 공부를 시작해 볼까요?",
        "temperature": 0.3,
    }
}


async def test_persona_variables_first_message_and_system_prompt(
    make_server: ServerFactory,
) -> None:
    server = await make_server(personas=PERSONA)
    me = await server.user("minji")
    status, personas = await server.call("GET", "/v1/personas", me)
    assert personas["items"][0]["variables"] == ["언어", "레벨"]
    status, data = await server.call(
        "POST", "/v1/conversations", me, json={"persona": "tutor", "variables": {"언어": "일본어"}}
    )
    assert (status, data["error"]["field"]) == (400, "variables")
    assert "{레벨}" in data["error"]["message"]
    cid = await new_conversation(
        server, me, persona="tutor", variables={"언어": "일본어", "레벨": "초급"}
    )
    stored = await history(server, me, cid)
    assert [(m["role"], m["content"]) for m in stored] == [
        ("assistant", "안녕하세요! 일본어 공부를 시작해 볼까요?")
    ]
    _, context = await server.call("GET", f"/v1/conversations/{cid}/context", me)
    assert context["messages"][0] == {
        "role": "system",
        "content": "당신은 일본어 선생님입니다. 학생 수준은 초급입니다.",
        "id": None,
    }


async def test_weather_tool_follow_up_works_through_context(make_server: ServerFactory) -> None:
    async with FakeWeatherService() as weather:
        model = PlannedModel()
        server = await make_server(
            {"planned": model},
            model_options={"planned": {"tools": ["get_weather"]}},
            tools={"weather_url": weather.url},
        )
        me = await server.user("minji")
        cid = await new_conversation(server, me)
        path = f"/v1/conversations/{cid}/messages"
        first = await server.stream("POST", path, me, json={"content": "서울 날씨 알려줘"})
        assert [d["name"] for d in first.of("step")].count("tool") == 1
        assert first.of("sources")[0]["items"][0]["result"]["city"] == "서울"
        assert "서울의 현재 날씨는 맑음" in first.text
        second = await server.stream("POST", path, me, json={"content": "부산은?"})
        assert "부산의 현재 날씨는 흐림" in second.text
        assert weather.lookups == ["서울", "부산"]
        stored = await history(server, me, cid)
        roles = [m["role"] for m in stored]
        assert roles == ["user", "assistant", "tool", "user", "assistant", "tool"]
        assert stored[1]["tool_calls"][0]["arguments"] == {"city": "서울"}
        # The model saw call → result → text order for the earlier turn.
        last_input = model.seen[-2]
        kinds = [(m.role.value, bool(m.tool_calls)) for m in last_input[1:]]
        assert kinds[:4] == [
            ("user", False),
            ("assistant", True),
            ("tool", False),
            ("assistant", False),
        ]


async def test_previews_search_export_and_delete_my_data(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    other = await server.user("other")
    cid = await new_conversation(server, me, title="여행")
    await server.call(
        "POST", f"/v1/conversations/{cid}/messages", me, json={"content": "제주도 여행 계획"}
    )
    other_cid = await new_conversation(server, other)
    await server.call(
        "POST", f"/v1/conversations/{other_cid}/messages", other, json={"content": "제주도 맛집"}
    )
    _, page = await server.call("GET", "/v1/conversations", me)
    assert page["items"][0]["preview"]["content"] == "답: 제주도 여행 계획"
    _, found = await server.call("GET", "/v1/search?q=제주", me)
    assert {m["content"] for m in found["items"]} == {"제주도 여행 계획", "답: 제주도 여행 계획"}
    status, data = await server.call("GET", "/v1/search?q=", me)
    assert (status, data["error"]["field"]) == (400, "q")
    _, exported = await server.call("GET", f"/v1/conversations/{cid}/export", me)
    assert [m["content"] for m in exported["messages"]] == [
        "제주도 여행 계획",
        "답: 제주도 여행 계획",
    ]
    status, markdown = await server.call(
        "GET", f"/v1/conversations/{cid}/export?format=markdown", me
    )
    assert (
        status == 200 and "# 여행" in markdown.decode() and "제주도 여행 계획" in markdown.decode()
    )
    status, _ = await server.call("DELETE", "/v1/users/me", me)
    assert status == 204
    status, _ = await server.call("GET", "/v1/conversations", me)
    assert status == 401
    assert await server.app_parts.store.get_conversation(cid) is None
    assert await server.app_parts.store.get_conversation(other_cid) is not None


async def test_other_users_cannot_export(make_server: ServerFactory) -> None:
    server = await make_server()
    me = await server.user("minji")
    other = await server.user("other")
    cid = await new_conversation(server, me)
    status, _ = await server.call("GET", f"/v1/conversations/{cid}/export", other)
    assert status == 404
