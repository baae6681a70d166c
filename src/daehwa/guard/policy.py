"""The guard's policy for a turn: screen the user's input, mask the model's output.

Configured by ``[guard]`` (:class:`daehwa.config.GuardSettings`):

* ``input_policy = "block"`` — a message with a banned word is refused: the
  caller stores it with status ``blocked`` and ends the turn with an ``error``
  event ``content_blocked`` (:meth:`InputVerdict.error`); ``"mask"`` — the
  banned words are masked and the turn goes on; ``"off"`` — no screening.
* ``output_policy = "mask"`` — the reply streams through a
  :class:`StreamFilter`; ``"off"`` — it passes unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from daehwa.config import GuardSettings
from daehwa.errors import ContentBlocked
from daehwa.guard.filter import ContentFilter, Match, apply_mask
from daehwa.guard.stream import StreamFilter
from daehwa.guard.wordlist import FilterHolder

__all__ = ["BLOCKED_MESSAGE", "ContentGuard", "InputVerdict"]

InputPolicy = Literal["block", "mask", "off"]
OutputPolicy = Literal["mask", "off"]

#: What a client is told when its message is refused (the words are not repeated).
BLOCKED_MESSAGE = "허용되지 않는 표현이 포함되어 있어 메시지를 처리할 수 없습니다."

# Above this many characters, screening runs in a worker thread (> ~1 ms of CPU).
_THREAD_THRESHOLD = 2_000

_NO_WORDS = ContentFilter(())


@dataclass(frozen=True, slots=True)
class InputVerdict:
    """What the input policy decided about one user message.

    ``text`` is what to store and send on (masked under ``"mask"``, as written
    otherwise); ``masked_text`` always has the banned words masked.
    """

    blocked: bool
    text: str
    masked_text: str
    matches: tuple[Match, ...]

    def error(self) -> ContentBlocked:
        """The error for the client when ``blocked``."""
        return ContentBlocked(BLOCKED_MESSAGE)


class ContentGuard:
    """Applies the configured input and output policy with the current word list."""

    def __init__(
        self,
        source: FilterHolder | ContentFilter,
        *,
        input_policy: InputPolicy = "block",
        output_policy: OutputPolicy = "mask",
    ) -> None:
        self._source = source
        self.input_policy: InputPolicy = input_policy
        self.output_policy: OutputPolicy = output_policy

    @classmethod
    def from_settings(cls, settings: GuardSettings) -> ContentGuard:
        """Read the word files named by ``settings`` (raises ``ConfigError`` if one cannot be)."""
        return cls(
            FilterHolder(settings.words_files),
            input_policy=settings.input_policy,
            output_policy=settings.output_policy,
        )

    @property
    def holder(self) -> FilterHolder | None:
        """The reloadable holder, when built from files."""
        return self._source if isinstance(self._source, FilterHolder) else None

    @property
    def filter(self) -> ContentFilter:
        """The filter in force now."""
        source = self._source
        return source.current if isinstance(source, FilterHolder) else source

    def screen_input(self, text: str) -> InputVerdict:
        """Apply the input policy to a user's message (about 0.1 ms per 1,000 characters)."""
        if self.input_policy == "off":
            return InputVerdict(False, text, text, ())
        matches = self.filter.scan(text)
        masked = apply_mask(text, matches)
        if self.input_policy == "mask":
            return InputVerdict(False, masked, masked, tuple(matches))
        return InputVerdict(bool(matches), text, masked, tuple(matches))

    async def screen_input_async(self, text: str) -> InputVerdict:
        """:meth:`screen_input`, in a worker thread when the text is long."""
        if len(text) > _THREAD_THRESHOLD:
            return await asyncio.to_thread(self.screen_input, text)
        return self.screen_input(text)

    def output_filter(self) -> StreamFilter:
        """A new stream filter for one reply (passes text unchanged when the policy is off)."""
        return StreamFilter(_NO_WORDS if self.output_policy == "off" else self.filter)

    def mask_output(self, text: str) -> str:
        """A whole (non-streamed) reply under the output policy."""
        return text if self.output_policy == "off" else self.filter.mask(text)
