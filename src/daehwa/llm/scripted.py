"""A deterministic model for tests and demos: it streams a scripted reply."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence

from daehwa.llm.base import Chunk, GenerationParams
from daehwa.messages import Message, Role, Usage

# Words with the space that follows them, or runs of spaces: the streamed pieces.
_PIECE = re.compile(r"\S+\s*|\s+")


def split_tokens(text: str) -> list[str]:
    """Split text into the pieces a scripted model streams (word + trailing space)."""
    return _PIECE.findall(text)


class ScriptedModel:
    """Streams ``reply`` word by word, ``token_delay`` seconds apart.

    ``reply`` may contain ``{input}`` (the last user message) and ``{turns}``
    (how many user messages the model received), which makes context visible
    in tests.
    """

    def __init__(self, name: str = "scripted", *, reply: str = "{input}", token_delay: float = 0.0):
        self.name = name
        self.reply = reply
        self.token_delay = token_delay

    def render(self, messages: Sequence[Message]) -> str:
        users = [m for m in messages if m.role is Role.USER]
        last = users[-1].content if users else ""
        return self.reply.replace("{input}", last).replace("{turns}", str(len(users)))

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        pieces = split_tokens(self.render(messages))
        finish = "stop"
        if len(pieces) > params.max_new_tokens:
            pieces, finish = pieces[: params.max_new_tokens], "length"
        prompt_tokens = sum(len(split_tokens(m.content)) for m in messages)
        for piece in pieces:
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield Chunk(text=piece)
        yield Chunk(finish_reason=finish, usage=Usage(prompt_tokens, len(pieces)))

    async def aclose(self) -> None:
        return None
