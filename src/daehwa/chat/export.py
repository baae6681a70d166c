"""A conversation as a Markdown document."""

from __future__ import annotations

from collections.abc import Sequence

from daehwa.messages import Conversation, Message, MessageStatus, Role

_SPEAKERS = {Role.USER: "나", Role.ASSISTANT: "봇", Role.SYSTEM: "시스템", Role.TOOL: "도구"}


def to_markdown(conversation: Conversation, messages: Sequence[Message]) -> str:
    """Headings per message with time and status; tool calls and results as JSON blocks."""
    import orjson

    lines = [f"# {conversation.title or '대화'}", ""]
    lines.append(f"- id: `{conversation.id}`")
    lines.append(f"- created: {conversation.created_at.isoformat()}")
    if conversation.persona:
        lines.append(f"- persona: {conversation.persona}")
    lines.append("")
    for message in messages:
        status = "" if message.status is MessageStatus.COMPLETE else f" ({message.status.value})"
        stamp = message.created_at.strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"## {_SPEAKERS[message.role]} · {stamp}{status}")
        lines.append("")
        if message.tool_calls:
            calls = [call.to_dict() for call in message.tool_calls]
            lines += [
                "```json",
                orjson.dumps(calls, option=orjson.OPT_INDENT_2).decode(),
                "```",
                "",
            ]
        if message.role is Role.TOOL:
            lines += ["```json", message.content, "```", ""]
        elif message.content:
            lines += [message.content, ""]
    return "\n".join(lines)
