"""Helpers for provider tests: sample messages and chunk collectors."""

from __future__ import annotations

from daehwa.llm.base import ChatModel, Chunk, GenerationParams
from daehwa.messages import Message, Role

API_KEY = "sk-test-0123456789abcdef"


def user(text: str = "안녕하세요") -> list[Message]:
    return [Message(Role.SYSTEM, "친절하게 답하세요."), Message(Role.USER, text)]


async def collect(
    model: ChatModel, messages: list[Message] | None = None, params: GenerationParams | None = None
) -> list[Chunk]:
    """Every chunk of one generation."""
    return [c async for c in model.stream(messages or user(), params or GenerationParams())]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def reasoning_of(chunks: list[Chunk]) -> str:
    return "".join(c.reasoning for c in chunks)
