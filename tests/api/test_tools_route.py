"""``POST /v1/tools/sliding-window`` over HTTP."""

from __future__ import annotations

from tests.api.conftest import ServerFactory


def turn(i: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"질문 {i} " + "가나다라 " * 20},
        {"role": "assistant", "content": f"답변 {i} " + "마바사아 " * 20},
    ]


async def test_drops_oldest_whole_turns_and_keeps_the_system_prompt(
    make_server: ServerFactory,
) -> None:
    server = await make_server(model_options={"scripted": {"context_window": 300}})
    me = await server.user("minji")
    messages = [{"role": "system", "content": "친절하게"}]
    for i in range(10):
        messages += turn(i)
    messages.append({"role": "user", "content": "마지막 질문"})
    status, data = await server.call(
        "POST", "/v1/tools/sliding-window", me, json={"messages": messages, "max_tokens": 100}
    )
    assert status == 200, data
    kept = data["messages"]
    assert kept[0] == {"role": "system", "content": "친절하게"}
    assert kept[-1]["content"] == "마지막 질문"
    assert kept[1]["role"] == "user"  # whole turns only
    tokens = data["tokens"]
    assert tokens["max_new"] == 100 and tokens["limit"] == 300
    assert tokens["input"] + tokens["max_new"] <= tokens["limit"]
    assert len(data["dropped"]) % 2 == 0 and data["dropped"]
    assert len(kept) - 1 + len(data["dropped"]) == len(messages) - 1


async def test_refuses_what_cannot_fit_and_bad_input(make_server: ServerFactory) -> None:
    server = await make_server(model_options={"scripted": {"context_window": 50}})
    me = await server.user("minji")
    too_long = [{"role": "user", "content": "가나다 " * 200}]
    status, data = await server.call(
        "POST", "/v1/tools/sliding-window", me, json={"messages": too_long, "max_tokens": 10}
    )
    assert (status, data["error"]["code"]) == (400, "context_overflow")
    for body, field in [
        ({"messages": too_long}, "max_tokens"),
        ({"messages": [], "max_tokens": 5}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}], "max_tokens": 5}, "messages[0].role"),
        ({"messages": too_long, "max_tokens": 5, "model": "nope"}, "model"),
    ]:
        status, data = await server.call("POST", "/v1/tools/sliding-window", me, json=body)
        assert (status, data["error"]["field"]) == (400, field), body
