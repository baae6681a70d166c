"""Messages as clients write them (OpenAI-style JSON) into domain messages."""

from __future__ import annotations

from typing import Any

import orjson

from daehwa.errors import InvalidInput
from daehwa.messages import Message, Role, ToolCall

ROLES = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
    "tool": Role.TOOL,
}


def _content(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [p.get("text") for p in value if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) == len(value) and all(isinstance(t, str) for t in texts):
            return "".join(str(t) for t in texts)
    raise InvalidInput(f"{where}.content must be a string or text parts", field=f"{where}.content")


def _tool_calls(value: Any, where: str) -> list[ToolCall] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInput(f"{where}.tool_calls must be an array", field=f"{where}.tool_calls")
    calls = []
    for number, item in enumerate(value):
        spot = f"{where}.tool_calls[{number}]"
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidInput(f"{spot}.function.name is required", field=spot)
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = orjson.loads(arguments) if arguments.strip() else {}
            except orjson.JSONDecodeError:
                raise InvalidInput(f"{spot}.function.arguments is not JSON", field=spot) from None
        if not isinstance(arguments, dict):
            raise InvalidInput(f"{spot}.function.arguments must be an object", field=spot)
        calls.append(ToolCall(str(item.get("id") or f"call_{number}"), function["name"], arguments))
    return calls


def parse_messages(raw: Any, *, field: str = "messages") -> list[Message]:
    """A non-empty array of ``{role, content, tool_calls?, tool_call_id?}``."""
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(f"{field} must be a non-empty array", field=field)
    messages = []
    for number, item in enumerate(raw):
        where = f"{field}[{number}]"
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            raise InvalidInput(
                f"{where}.role must be one of {', '.join(ROLES)}", field=f"{where}.role"
            )
        tool_call_id = item.get("tool_call_id")
        if tool_call_id is not None and not isinstance(tool_call_id, str):
            raise InvalidInput(
                f"{where}.tool_call_id must be a string", field=f"{where}.tool_call_id"
            )
        messages.append(
            Message(
                ROLES[item["role"]],
                _content(item.get("content"), where),
                tool_calls=_tool_calls(item.get("tool_calls"), where),
                tool_call_id=tool_call_id,
            )
        )
    return messages
