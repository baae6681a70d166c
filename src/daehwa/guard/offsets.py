"""A normalised text with the way back to the original's offsets."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from daehwa.guard.folding import is_latin_letter

__all__ = ["Normalized"]


class Normalized:
    """A normalised text and the way back to the original's offsets.

    Two layers: folding maps original characters to *folded* ones (one to
    one on the fast path; otherwise ``starts`` per folded character, and
    ``ends`` too where composed jamo span several originals); joining
    spread-out runs then deletes some folded separators (``deleted``, sorted).
    ``stable_end`` is only meaningful when the text was normalised as an open
    stream: past it, more text could still change the normalised form (a
    spread-out word may go on, jamo may compose).
    """

    __slots__ = (
        "_deleted",
        "_ends",
        "_shifted",
        "_starts",
        "classes",
        "identity",
        "stable_end",
        "text",
    )

    def __init__(
        self,
        text: str,
        stable_end: int,
        *,
        classes: bytes | None = None,
        deleted: list[int] | None = None,
        starts: Sequence[int] | None = None,
        ends: Sequence[int] | None = None,
    ) -> None:
        self.text = text
        self.stable_end = stable_end
        #: ``b"L"`` (letter) or ``b"S"`` (separator) per character of ``text``,
        #: for texts normalised with ``open_end``; otherwise ``None``.
        self.classes = classes
        self._deleted = deleted or []
        self._shifted: list[int] | None = None  # computed on first use
        self._starts = starts
        self._ends = ends
        #: Whether normalised index ``i`` is original index ``i`` (nothing was
        #: folded away, spliced in or joined).
        self.identity = starts is None and not deleted

    def _folded(self, index: int) -> int:
        if not self._deleted:
            return index
        shifted = self._shifted
        if shifted is None:
            # Normalised index n is folded index n + (number of shifted values <= n).
            shifted = self._shifted = [d - i for i, d in enumerate(self._deleted)]
        return index + bisect_right(shifted, index)

    def _original_start(self, index: int) -> int:
        folded = self._folded(index)
        return folded if self._starts is None else self._starts[folded]

    def _original_end(self, index: int) -> int:
        folded = self._folded(index)
        if self._ends is not None:
            return self._ends[folded]
        return (folded if self._starts is None else self._starts[folded]) + 1

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of normalised characters ``[start, end)``; ``end > start``."""
        return self._original_start(start), self._original_end(end - 1)

    def index_at(self, original: int) -> int:
        """The first normalised index whose original position is at or after ``original``."""
        if original <= 0:
            return 0
        folded = original if self._starts is None else bisect_left(self._starts, original)
        if self._deleted:
            folded -= bisect_left(self._deleted, folded)
        return min(folded, len(self.text))

    def is_word_boundary(self, i: int) -> bool:
        """Whether a Latin word may begin or end between normalised ``i - 1`` and ``i``.

        Hangul, digits and symbols next to a Latin word are boundaries
        ("fuck이다", "fuck123"); so is a place where something was removed
        between the two letters (a spread-out or zero-width-split word).
        """
        text = self.text
        if i <= 0 or i >= len(text):
            return True
        if not (is_latin_letter(text[i - 1]) and is_latin_letter(text[i])):
            return True
        if self._starts is None and not self._deleted:
            return False
        return self._original_end(i - 1) < self._original_start(i)
