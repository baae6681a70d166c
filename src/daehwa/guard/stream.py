"""Masking a text that arrives in pieces: :class:`StreamFilter`.

A model's reply streams in deltas, and a banned word can be split across
two of them ("바" + "보", "시 " + "1 발"). The stream filter releases a delta's
text only once no banned word can still begin in it, so the client never sees
a word that the next delta would have completed, and what it releases is, in
total, exactly ``ContentFilter.mask`` of the whole reply.

What is held back, and why:

* the still-open end of the text (:attr:`Normalized.stable_end`): a
  spread-out run ("바 보 ") while it may go on, and the last letter of the last
  word when the next delta could change it (jamo that may compose) or decide
  whether a word ends there (a Latin letter). A Hangul syllable typed whole
  is final at once;
* from the first place where the text could still become a banned word: the
  shortest suffix that is a proper beginning of some normalised word. Only a
  genuine partial match waits; "안녕" goes out as soon as it arrives.

Each position is tested once, when it becomes stable; a position that cannot
begin a word now never can. The window kept for context starts at the
current word (or two letters before the released end inside a long word), so
each delta normalises only a few characters.
"""

from __future__ import annotations

from daehwa.guard.filter import MASK_CHAR, ContentFilter, Match
from daehwa.guard.normalize import Normalized, normalize

__all__ = ["StreamFilter"]

#: Past this many characters kept for context, cut inside a long unspaced word.
_LONG_WINDOW = 64
_LETTER = b"L"[0]


class StreamFilter:
    """Masks banned words in streamed text, holding back only what it must.

    ``feed(delta)`` returns the text that is safe to show now (masked);
    ``flush()`` returns the rest when the stream ends. The concatenation of
    everything returned equals ``content_filter.mask(full_text)``; store that,
    and the stored reply is exactly what the client saw.

    The one exception is ``max_hold``: a run of single spread-out letters
    longer than that many characters ("a b c d …") is released without
    waiting for its end, to bound latency and memory; a banned word spread
    across that cut may then be missed.
    """

    def __init__(
        self, content_filter: ContentFilter, *, char: str = MASK_CHAR, max_hold: int = 1024
    ) -> None:
        self._filter = content_filter
        self._char = char
        self._max_hold = max(max_hold, content_filter.max_length * 4)
        self._max_length = content_filter.max_length
        self._can_grow = content_filter.can_grow
        self._find = content_filter.find_normalized
        self._empty = not len(content_filter)
        self._window = ""  # the text from absolute offset _base on
        self._base = 0
        self._released = 0  # absolute: everything before has been returned
        self._covered = 0  # absolute: end of the last decided match
        self._checked = 0  # absolute: no later match can start before this
        self._matches: list[Match] = []
        self._closed = False

    @property
    def matches(self) -> list[Match]:
        """The banned words found so far, with offsets in the whole streamed text."""
        return list(self._matches)

    @property
    def held(self) -> int:
        """How many characters fed so far have not been returned yet."""
        return self._base + len(self._window) - self._released

    def feed(self, delta: str) -> str:
        """Add the next piece of text; return the masked text that can be shown now."""
        if self._closed:
            raise RuntimeError("StreamFilter.feed() after flush()")
        if not delta:
            return ""
        if self._empty:
            self._released += len(delta)
            self._base = self._released
            return delta
        self._window += delta
        return self._advance(final=False)

    def flush(self) -> str:
        """End the stream; return the rest of the text, masked."""
        if self._closed:
            return ""
        self._closed = True
        if not self._window:
            return ""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        window, base = self._window, self._base
        norm = normalize(window, open_end=not final)
        # The common window (Hangul, ASCII, no spread-out letters) is its own
        # normal form: normalised and original offsets are the same.
        identity = norm.identity
        released = self._released - base
        scan_from = max(released, self._covered - base)
        first = min(scan_from, len(window)) if identity else norm.index_at(scan_from)
        forced = False
        if final:
            release = len(window)
        else:
            # Hold back from the first stable position whose text up to the stable
            # end is a proper beginning of some normalised word: only a genuine
            # partial match waits. A position that cannot begin a word now never
            # can, so each is tested once (``_checked``).
            stable_end = norm.stable_end
            stable = stable_end if identity else norm.index_at(stable_end)
            checked = self._checked - base
            q = max(
                first,
                checked if identity else norm.index_at(checked),
                stable - self._max_length,
            )
            normalized = norm.text
            can_grow = self._can_grow
            while q < stable and not can_grow(normalized[q:stable]):
                q += 1
            if q < stable:
                release = q if identity else norm.span(q, q + 1)[0]
                self._checked = base + max(release, scan_from)
                release = min(release, stable_end)
            else:
                self._checked = base + stable_end
                release = stable_end
            release = max(release, released)
            if len(window) - release > self._max_hold:
                release, forced = len(window) - self._max_hold, True
            if release == released:
                return ""  # nothing new is final: the window stays as it is
        found = self._find(norm, first)
        if found or self._covered > base + released:
            text = self._emit(window, base, release, found)
        else:
            text = window[released:release]  # nothing to mask: the common case
        self._released = base + release
        if final:
            self._window, self._base = "", base + len(window)
        else:
            cut = release if forced else self._cut(norm, window, release)
            self._window = window[cut:]
            self._base = base + cut
        return text

    def _emit(self, window: str, base: int, release: int, found: list[Match]) -> str:
        """The masked text of ``window[released:release]``; records the decided matches."""
        char = self._char
        position = self._released - base
        parts: list[str] = []
        covered = self._covered - base
        if covered > position:  # the rest of a match decided before
            end = min(covered, release)
            parts.append(char * (end - position))
            position = end
        for match in found:
            if match.start >= release:
                break
            parts.append(window[position : match.start])
            end = min(match.end, release)
            parts.append(char * (end - match.start))
            position = end
            self._covered = base + match.end
            self._matches.append(Match(base + match.start, base + match.end, match.word))
        if position < release:
            parts.append(window[position:release])
        return "".join(parts)

    def _cut(self, norm: Normalized, window: str, release: int) -> int:
        """Where the kept window may start: a word start at or before ``release``.

        Normalising from a word start gives the same result as normalising
        from the beginning (a word is never joined with one before it that is
        not in the window), so the window stays small.
        """
        classes = norm.classes
        assert classes is not None  # normalised with open_end
        if release == len(window) and classes.endswith(b"S"):
            # All released, up to a separator: what comes next is read as after a
            # separator, so nothing before is needed (an open single letter would
            # not have been released).
            return release
        identity = norm.identity
        j = release if identity else norm.index_at(release)
        if j < len(classes) and classes[j] == _LETTER:
            j = classes.rfind(b"S", 0, j) + 1  # the start of this word
        else:
            last_letter = classes.rfind(b"L", 0, j)  # the start of the word before
            j = classes.rfind(b"S", 0, last_letter) + 1 if last_letter >= 0 else 0
        cut = release
        if j < len(classes):
            cut = min(release, j if identity else norm.span(j, j + 1)[0])
        if (
            len(window) - cut > _LONG_WINDOW
            and release >= 2
            and _plain(window[release - 2 : release])
        ):
            # Inside a long word of plain letters: two of them keep the context exact.
            cut = release - 2
        return cut


def _plain(chars: str) -> bool:
    """Letters that normalise to themselves and never join or compose."""
    return all(
        (c.isascii() and c.isalpha()) or ("\uac00" <= c <= "\ud7a3") or ("\u4e00" <= c <= "\u9fff")
        for c in chars
    )
