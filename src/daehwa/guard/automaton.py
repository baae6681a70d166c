"""The Aho-Corasick automaton over the normalised word list.

Backed by ``ahocorasick_rs`` (Rust). It was chosen by measurement over
``pyahocorasick``: at 100,000 Korean and English words, scanning 1,000
characters took about 20 µs against several hundred for pyahocorasick, whose
per-node child lookup is slow with thousands of distinct Hangul syllables
(figures and the command in docs/content-filter.md). The contiguous NFA is
used: about as fast as the DFA here, at 15 MB instead of 250 MB for 100,000
words.

The automaton reports every occurrence (overlapping); :meth:`WordAutomaton.find`
then keeps the leftmost-longest ones that do not overlap, after dropping Latin
words that are not on a word boundary. Doing the selection here rather than
in the automaton keeps it correct when a longer candidate fails the boundary
test and a shorter one at the same place passes ("bad boys" vs "bad").
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Sequence

from ahocorasick_rs import AhoCorasick, Implementation, MatchKind

from daehwa.guard.normalize import Folded, Normalized, is_latin_letter, spread_runs

__all__ = ["WordAutomaton"]

_LEFT, _RIGHT = 1, 2


def _start_then_longest(hit: tuple[int, int, int]) -> tuple[int, int]:
    return hit[1], -hit[2]


class WordAutomaton:
    """Finds normalised patterns in normalised text.

    ``patterns`` must be non-empty, distinct, normalised strings. A pattern
    that begins (ends) with a Latin letter only matches where a Latin word
    begins (ends).
    """

    def __init__(self, patterns: Sequence[str], *, separators: bool = True) -> None:
        self._size = len(patterns)
        #: Whether some pattern contains a separator (then :meth:`find_folded` cannot be used).
        self.separators = separators
        self._automaton = (
            AhoCorasick(
                patterns,
                matchkind=MatchKind.Standard,
                store_patterns=False,
                implementation=Implementation.ContiguousNFA,
            )
            if patterns
            else None
        )
        self._boundaries = bytes(
            (_LEFT if is_latin_letter(p[0]) else 0) | (_RIGHT if is_latin_letter(p[-1]) else 0)
            for p in patterns
        )
        # Sorted patterns answer "can this text still grow into a word?" by bisection,
        # within the patterns that begin with the text's first character. Most texts
        # asked about are one or two characters long, or fail on their first two:
        # sets of the first one and two characters of longer patterns answer those.
        self._sorted = sorted(patterns)
        self._stems1 = frozenset(p[0] for p in patterns if len(p) > 1)
        self._stems2 = frozenset(p[:2] for p in patterns if len(p) > 2)
        self._ranges: dict[str, tuple[int, int]] = {}
        start = 0
        for first, group in itertools.groupby(self._sorted, key=operator.itemgetter(0)):
            end = start + sum(1 for _ in group)
            self._ranges[first] = (start, end)
            start = end
        self.max_length = max(map(len, patterns), default=0)

    def __len__(self) -> int:
        return self._size

    def find(self, norm: Normalized, start: int = 0) -> list[tuple[int, int, int]]:
        """Selected matches ``(pattern index, start, end)`` in ``norm.text`` from ``start``."""
        if self._automaton is None:
            return []
        text = norm.text
        hits = self._automaton.find_matches_as_indexes(
            text[start:] if start else text, overlapping=True
        )
        if not hits:
            return []
        if len(hits) > 1:
            hits.sort(key=_start_then_longest)
        boundaries = self._boundaries
        selected: list[tuple[int, int, int]] = []
        position = 0
        for index, hit_start, hit_end in hits:
            if hit_start < position:
                continue
            need = boundaries[index]
            if need and not (
                (not need & _LEFT or norm.is_word_boundary(hit_start + start))
                and (not need & _RIGHT or norm.is_word_boundary(hit_end + start))
            ):
                continue
            selected.append((index, hit_start + start, hit_end + start))
            position = hit_end
        return selected

    def find_folded(self, folded: Folded) -> list[tuple[int, int, int]]:
        """Like :meth:`find` on ``normalize(text)``, without building the joined text.

        Returns ``(pattern index, start, end)`` in *folded* offsets. The folded
        text is scanned as it is, and the spread-out runs, joined, are scanned
        apart. This is the same as scanning the joined text when no pattern
        contains a separator: a run is then bounded by separators no match can
        cross, and a match in the folded text can only touch a run if it is
        one letter long (it lies within one piece, and a run's pieces are
        single letters); those are dropped, the joined runs find them.
        Inside a joined run every position is a word boundary (its letters
        were apart), so those matches need no boundary test.
        """
        automaton = self._automaton
        if automaton is None:
            return []
        if self.separators:
            raise ValueError("find_folded() needs patterns without separators")
        text = folded.text
        runs = spread_runs(text, folded.classes)
        candidates = automaton.find_matches_as_indexes(text, overlapping=True)
        if candidates:
            boundaries = self._boundaries
            view: Normalized | None = None
            kept: list[tuple[int, int, int]] = []
            for hit in candidates:
                index, start, end = hit
                if runs is not None and end - start == 1 and runs.covers(start):
                    continue  # a letter of a spread-out run: found in the joined runs
                need = boundaries[index]
                if need:
                    if view is None:
                        view = Normalized(text, 0, starts=folded.starts, ends=folded.ends)
                    if (need & _LEFT and not view.is_word_boundary(start)) or (
                        need & _RIGHT and not view.is_word_boundary(end)
                    ):
                        continue
                kept.append(hit)
            candidates = kept
        if runs is not None:
            joined = runs.joined
            for index, start, end in automaton.find_matches_as_indexes(joined, overlapping=True):
                k = joined.count("\x00", 0, start)
                piece = joined.rfind("\x00", 0, start) + 1
                candidates.append(
                    (index, runs.letter(k, start - piece), runs.letter(k, end - 1 - piece) + 1)
                )
        if len(candidates) > 1:
            candidates.sort(key=_start_then_longest)
        selected: list[tuple[int, int, int]] = []
        position = 0
        for candidate in candidates:
            if candidate[1] >= position:
                selected.append(candidate)
                position = candidate[2]
        return selected

    def can_grow(self, text: str) -> bool:
        """Whether some pattern starts with ``text`` and is longer than it."""
        size = len(text)
        if size <= 2:
            return text in self._stems1 if size == 1 else size == 2 and text in self._stems2
        if size >= self.max_length or text[:2] not in self._stems2:
            return False
        bounds = self._ranges[text[0]]
        patterns = self._sorted
        i = bisect.bisect_right(patterns, text, *bounds)
        return i < bounds[1] and patterns[i].startswith(text)
