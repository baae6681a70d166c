"""The content filter over whole texts: :class:`ContentFilter` and :class:`Match`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from daehwa.guard.automaton import WordAutomaton
from daehwa.guard.normalize import Normalized, fold, normalize

__all__ = ["MASK_CHAR", "ContentFilter", "Match", "apply_mask"]

#: What each character of a banned word is replaced with.
MASK_CHAR = "*"


@dataclass(frozen=True, slots=True)
class Match:
    """A banned word found in a text.

    ``start`` and ``end`` are offsets in the original text (``text[start:end]``
    is what was written, e.g. ``"바 . 보"``); ``word`` is the entry of the word
    list it matched (e.g. ``"바보"``).
    """

    start: int
    end: int
    word: str


class ContentFilter:
    """Aho-Corasick matching of a banned-word list, Korean-aware.

    Words and text are normalised the same way (:mod:`daehwa.guard.normalize`):
    case, width, diacritics and invisible characters do not matter, spelled-out
    jamo and spread-out letters are joined. Korean words match anywhere (they
    take particles: "바보야"); a word that begins or ends with a Latin letter
    matches only on a Latin word boundary ("ass" is not found in "class").
    Matches do not overlap; the leftmost, then the longest, wins.

    Immutable once built, so one instance can be shared by every request and
    thread; build a new one to change the list (see :class:`FilterHolder`).
    An empty list is allowed: it matches nothing.
    """

    def __init__(self, words: Iterable[str]) -> None:
        patterns: dict[str, str] = {}
        separators = False
        for word in words:
            word = word.strip()
            if not word:
                continue
            norm = normalize(word, open_end=True)  # open_end: to get its classes
            if norm.text and norm.text not in patterns:
                patterns[norm.text] = word
                separators = separators or b"S" in (norm.classes or b"")
        self._words = list(patterns.values())
        self._automaton = WordAutomaton(list(patterns), separators=separators)
        #: ``can_grow(normalized_text)``: whether some normalised word is a longer
        #: continuation of ``normalized_text`` (what a stream must hold back).
        self.can_grow: Callable[[str], bool] = self._automaton.can_grow

    @classmethod
    def from_files(cls, paths: Iterable[str | os.PathLike[str]]) -> ContentFilter:
        """Build from UTF-8 word files: one word a line, ``#`` comments and blank lines ignored.

        Raises :class:`daehwa.errors.ConfigError` naming the file that cannot be read.
        """
        from daehwa.guard.wordlist import read_word_files

        return cls(read_word_files(paths))

    def __len__(self) -> int:
        """The number of distinct words (after normalisation)."""
        return len(self._words)

    @property
    def max_length(self) -> int:
        """The longest normalised word, in characters (0 for an empty list)."""
        return self._automaton.max_length

    def scan(self, text: str) -> list[Match]:
        """The banned words in ``text``, in order, with offsets in ``text``."""
        if not self._words or not text:
            return []
        if self._automaton.separators:
            return self.find_normalized(normalize(text))
        folded = fold(text)
        starts, ends = folded.starts, folded.ends
        words = self._words
        matches: list[Match] = []
        for index, start, end in self._automaton.find_folded(folded):
            if starts is not None:
                start, end = (
                    starts[start],
                    (ends[end - 1] if ends is not None else starts[end - 1] + 1),
                )
            matches.append(Match(start, end, words[index]))
        return matches

    def mask(self, text: str, *, char: str = MASK_CHAR) -> str:
        """``text`` with every character of every match replaced by ``char``."""
        return apply_mask(text, self.scan(text), char=char)

    def find_normalized(self, norm: Normalized, start: int = 0) -> list[Match]:
        """Matches in an already normalised text, from normalised index ``start``."""
        words = self._words
        matches: list[Match] = []
        for index, match_start, match_end in self._automaton.find(norm, start):
            original_start, original_end = norm.span(match_start, match_end)
            matches.append(Match(original_start, original_end, words[index]))
        return matches


def apply_mask(text: str, matches: Sequence[Match], *, char: str = MASK_CHAR) -> str:
    """Replace the characters of ``matches`` (sorted, not overlapping) in ``text``."""
    if not matches:
        return text
    parts: list[str] = []
    previous = 0
    for match in matches:
        parts.append(text[previous : match.start])
        parts.append(char * (match.end - match.start))
        previous = match.end
    parts.append(text[previous:])
    return "".join(parts)
