"""Text normalisation for matching, with a map back to the original offsets.

The filter matches banned words against a *normalised* view of the text, then
reports offsets in the original. One function, :func:`normalize`, is used for
the word list and for the text alike, so both sides fold the same way:

1. Per character: NFKC, case folding, diacritics stripped (``ü`` → ``u``),
   invisible format characters removed (zero-width space and joiners, soft
   hyphen, bidi marks, Hangul fillers, combining marks). Compatibility jamo
   become conjoining jamo, so ``ㅅㅂ`` typed either way is one form.
   Characters U+4000–U+EFFF (Hangul syllables, CJK ideographs and a few rarer
   scripts) are taken as they are.
2. Spelled-out jamo are composed: ``ㅅㅣㅂㅏㄹ`` → ``시발``.
3. Spread-out words are joined: a run of two or more *single-letter* pieces,
   each separated by at most :data:`MAX_GAP` separators (spaces, punctuation,
   digits, symbols), loses its separators: ``바 보``, ``바.보``, ``시1발``,
   ``b.a.d`` → ``바보``, ``바보``, ``시발``, ``bad``. Pieces of two or more
   letters are never glued together, so ``나 쁜 놈`` is caught but an ordinary
   sentence does not turn into one long word (see docs/content-filter.md for
   the measured false-positive rate).

Speed: a 1,000-character message is normalised in well under a millisecond. The
common case (Hangul, CJK and ASCII) never loops over characters in Python:
characters are classified by translating their UTF-8 bytes, and such a text
with no single-letter piece is its own normal form, index for index. The few
other characters are folded one by one and spliced in; when that changes the
length (``ß`` → ``ss``, ``…`` → ``...``, zero-width characters dropped) a
list of original offsets is built in C-speed slices. Spread-out runs are found
by one regex over the class bytes (:func:`spread_runs` cuts the common,
alternating ones as step-2 slices). Only spelled-out jamo to compose take a
per-character Python path; all paths give the same result.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import chain, repeat
from operator import sub
from typing import NamedTuple

__all__ = [
    "MAX_GAP",
    "Folded",
    "Normalized",
    "SpreadRuns",
    "fold",
    "is_latin_letter",
    "normalize",
    "spread_runs",
]

#: Separators allowed between two letters of a spread-out word ("바 . 보").
MAX_GAP = 3

_L, _S, _U, _X, _N = b"L"[0], b"S"[0], b"U"[0], b"X"[0], b"N"[0]


def _class_table() -> bytes:
    """Byte → class for UTF-8 bytes; continuation bytes are deleted before."""
    table = bytearray(b"X" * 256)
    for b in range(0x80):
        table[b] = _S
    for b in range(ord("a"), ord("z") + 1):
        table[b] = _L
    for b in range(ord("A"), ord("Z") + 1):
        table[b] = _U
    # Lead bytes of U+4000–U+EFFF: Hangul syllables and CJK ideographs, taken as letters.
    for b in range(0xE4, 0xEF):
        table[b] = _L
    return bytes(table)


_CLASS_TABLE = _class_table()
_CONTINUATION = bytes(range(0x80, 0xC0))
_UPPER_TO_LETTER = bytes.maketrans(b"U", b"L")
# A single letter, then more single letters each after 1..MAX_GAP separators.
_RUN = re.compile(f"SLS(?:S{{0,{MAX_GAP - 1}}}L)(?:S{{1,{MAX_GAP}}}L)*(?=S)".encode())
# A run of single letters one separator apart, in the padded classes. The match
# starts at the separator before the run, so its start is the run's first letter
# in the unpadded text, and its end one more than the end of the run.
_ALTERNATING_RUN = re.compile(rb"SLSL(?:SL)*(?=S)")
# Two single letters 2..MAX_GAP separators apart: a run that does not alternate.
_WIDE_GAP = re.compile(f"SLSS{{1,{MAX_GAP - 1}}}LS".encode())
_SPAN = re.Match.span
_SPECIAL = re.compile(rb"X")
_CONJOINING = re.compile("[\u1100-\u11ff]")
_JAMO_RUN = re.compile("[\u1100-\u11ff]{2,}")

# Conjoining jamo: leading consonants, vowels, trailing consonants.
_L0, _V0, _T0, _SBASE = 0x1100, 0x1161, 0x11A7, 0xAC00
# A leading consonant that can close the previous syllable, as its trailing index.
_LEAD_AS_TAIL = {
    0x1100: 1, 0x1101: 2, 0x1102: 4, 0x1103: 7, 0x1105: 8, 0x1106: 16, 0x1107: 17,
    0x1109: 19, 0x110A: 20, 0x110B: 21, 0x110C: 22, 0x110E: 23, 0x110F: 24,
    0x1110: 25, 0x1111: 26, 0x1112: 27,
}  # fmt: skip
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0")
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})

_FOLD: dict[str, str] = {}
_FOLD_LIMIT = 200_000


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


class Folded(NamedTuple):
    """Text after the per-character folding, before spread-out runs are joined.

    ``classes`` has ``b"L"`` (letter) or ``b"S"`` (separator) per character;
    ``starts``/``ends`` map each character to its original span (``None``:
    one to one).
    """

    text: str
    classes: bytes
    starts: Sequence[int] | None
    ends: Sequence[int] | None
    original_length: int


def normalize(text: str, *, open_end: bool = False) -> Normalized:
    """Normalise ``text`` for matching (see the module docstring).

    With ``open_end`` the text is the beginning of a stream, and
    :attr:`Normalized.stable_end` says how much of it is final.
    """
    raw = text.encode("utf-8", "surrogatepass")
    classes = raw.translate(_CLASS_TABLE, _CONTINUATION)
    if _X in classes:
        return _join_spread(*_fold_special(text, raw, classes), open_end)
    folded = text
    if _U in classes:
        folded = raw.lower().decode("utf-8", "surrogatepass")
        classes = classes.translate(_UPPER_TO_LETTER)
    if b"SLS" in b"S" + classes + b"S":
        return _join_spread(folded, classes, None, None, len(text), open_end)
    # Plain text (ASCII, Hangul, CJK) with no single-letter piece: normalised
    # index for index. The common case of a stream's window.
    if not open_end:
        return Normalized(folded, len(text))
    return Normalized(
        folded, _stable_end(folded, classes, (0, 0), None, None, len(text)), classes=classes
    )


def fold(text: str) -> Folded:
    """Steps 1 and 2 of the normalisation: fold characters, compose jamo."""
    raw = text.encode("utf-8", "surrogatepass")
    classes = raw.translate(_CLASS_TABLE, _CONTINUATION)
    if _X in classes:
        return _fold_special(text, raw, classes)
    folded = text
    if _U in classes:
        # Only ASCII letters are upper case here: everything else is marked X.
        folded = raw.lower().decode("utf-8", "surrogatepass")
        classes = classes.translate(_UPPER_TO_LETTER)
    return Folded(folded, classes, None, None, len(text))


class SpreadRuns:
    """The runs of single-letter pieces of a folded text, joined.

    ``joined`` has each run's letters, runs apart by ``"\x00"`` (never in a
    word: it is a separator). Run ``k`` spans folded ``starts[k]`` (its first
    letter) to ``ends[k]`` (after its last). ``letters`` is ``None`` when every
    run alternates letter and separator (the letters of a run are then
    ``start``, ``start + 2`` …); otherwise it lists each run's letter indices.
    """

    __slots__ = ("_ends", "_stops", "joined", "letters", "starts")

    def __init__(
        self,
        joined: str,
        starts: list[int],
        *,
        ends: list[int] | None = None,
        stops: list[int] | None = None,
        letters: list[list[int]] | None = None,
    ) -> None:
        self.joined = joined
        self.starts = starts
        self._ends = ends
        self._stops = stops  # alternating runs: each end plus one, made into ends on demand
        self.letters = letters

    @property
    def ends(self) -> list[int]:
        """After each run's last letter."""
        if self._ends is None:
            self._ends = list(map(sub, self._stops or [], repeat(1)))
        return self._ends

    def letter(self, k: int, j: int) -> int:
        """The folded index of letter ``j`` of run ``k``."""
        if self.letters is None:
            return self.starts[k] + 2 * j
        return self.letters[k][j]

    def covers(self, i: int) -> bool:
        """Whether folded index ``i`` lies in a run."""
        k = bisect_right(self.starts, i) - 1
        return k >= 0 and i < self.ends[k]


def spread_runs(text: str, classes: bytes) -> SpreadRuns | None:
    """The runs of single-letter pieces of folded ``text``, joined; ``None`` if there is none.

    The common runs alternate letter and separator ("할 수", "b.a.d"): their
    letters are every other character, cut by C code with no Python work per
    run. A text with a wider gap in some run ("바 . 보") takes a slower path.
    """
    padded = b"S" + classes + b"S"
    if b"SLS" not in padded:  # no single-letter piece: no run (a cheap test)
        return None
    if _WIDE_GAP.search(padded) is None:
        spans = list(chain.from_iterable(map(_SPAN, _ALTERNATING_RUN.finditer(padded))))
        if not spans:
            return None
        # A match ends one past its run's end: with step 2, slicing to it takes the same letters.
        starts, stops = spans[0::2], spans[1::2]
        joined = "\x00".join(map(text.__getitem__, map(slice, starts, stops, repeat(2))))
        return SpreadRuns(joined, starts, stops=stops)
    starts, ends, letters, pieces = [], [], [], []
    for found in _RUN.finditer(padded):
        # Offsets in the padded bytes are one more; the match starts with the separator.
        start, end = found.span()
        starts.append(start)
        ends.append(end - 1)
        kept = [k for k in range(start, end - 1) if classes[k] == _L]
        letters.append(kept)
        pieces.append("".join([text[k] for k in kept]))
    if not starts:
        return None
    return SpreadRuns("\x00".join(pieces), starts, ends=ends, letters=letters)


def _fold_special(text: str, raw: bytes, classes: bytes) -> Folded:
    """Fold the characters the byte table could not classify, and splice them in."""
    substitutions: list[tuple[int, str]] = []
    patched = bytearray(classes.translate(_UPPER_TO_LETTER))
    resized = compose = False
    for found in _SPECIAL.finditer(classes):
        i = found.start()
        char = text[i]
        folded = _fold(char)
        if folded and _is_lead_jamo(folded[-1]) and _vowel_follows(text, i + 1):
            compose = True  # spelled-out jamo: composing changes the length
        if len(folded) == 1:
            patched[i] = _class_of(folded)
        else:
            resized = True
        if folded != char:
            substitutions.append((i, folded))
    base = raw.lower().decode("utf-8", "surrogatepass") if _U in classes else text
    parts: list[str] = []
    previous = 0
    if not resized:
        for i, folded in substitutions:
            parts.append(base[previous:i])
            parts.append(folded)
            previous = i + 1
        parts.append(base[previous:])
        if compose:
            # One character each so far: the offsets before composing are 0, 1, 2, …
            n = len(text)
            iota = _iota(n + 1)
            return _compose_regions("".join(parts), iota[:n], iota[1 : n + 1], n)
        return Folded("".join(parts), bytes(patched), None, None, len(text))
    # Some characters fold to several or to none ("…" → "...", zero-width → ""): map them.
    # Each folded character still comes from one original character: starts suffice.
    # Offsets are arrays sliced from a ready-made 0, 1, 2, … (no int objects per character).
    n = len(text)
    iota = _iota(n + 1)
    class_parts: list[bytes | bytearray] = []
    starts = array("q")
    ends = array("q")  # only to compose jamo; otherwise each end is start + 1
    for i, folded in substitutions:
        parts.append(base[previous:i])
        class_parts.append(patched[previous:i])
        starts += iota[previous:i]
        parts.append(folded)
        class_parts.append(bytes([_class_of(c) for c in folded]))
        starts += iota[i : i + 1] * len(folded)
        if compose:
            ends += iota[previous + 1 : i + 1]
            ends += iota[i + 1 : i + 2] * len(folded)
        previous = i + 1
    parts.append(base[previous:])
    class_parts.append(patched[previous:])
    starts += iota[previous:n]
    if compose:
        ends += iota[previous + 1 : n + 1]
        return _compose_regions("".join(parts), starts, ends, n)
    return Folded("".join(parts), b"".join(class_parts), starts, None, n)


_IOTA = array("q", range(4096))


def _iota(size: int) -> array[int]:
    """The array 0, 1, …, at least ``size`` long (grown on demand, shared)."""
    global _IOTA
    if len(_IOTA) < size:
        _IOTA = array("q", range(max(size, 2 * len(_IOTA))))
    return _IOTA


def _compose_regions(
    text: str, starts: array[int], ends: array[int], original_length: int
) -> Folded:
    """Compose the runs of conjoining jamo in folded ``text``; the rest is untouched."""
    parts: list[str] = []
    new_starts = array("q")
    new_ends = array("q")
    previous = 0
    for found in _JAMO_RUN.finditer(text):
        start, end = found.span()
        composed, region_starts, region_ends = _compose_jamo(
            text[start:end], starts[start:end], ends[start:end]
        )
        parts += (text[previous:start], composed)
        new_starts += starts[previous:start]
        new_starts.extend(region_starts)
        new_ends += ends[previous:start]
        new_ends.extend(region_ends)
        previous = end
    parts.append(text[previous:])
    new_starts += starts[previous:]
    new_ends += ends[previous:]
    result = "".join(parts)
    return Folded(result, _classes_of(result), new_starts, new_ends, original_length)


def _classes_of(folded: str) -> bytes:
    """Letter or separator for each character of an already folded text."""
    classes = bytearray(
        folded.encode("utf-8", "surrogatepass").translate(_CLASS_TABLE, _CONTINUATION)
    )
    for found in _SPECIAL.finditer(classes):
        classes[found.start()] = _class_of(folded[found.start()])
    return bytes(classes).translate(_UPPER_TO_LETTER)


def _vowel_follows(text: str, j: int) -> bool:
    """Whether the next character that does not vanish folds to a vowel jamo."""
    while j < len(text):
        folded = _fold(text[j])
        if folded:
            return _is_vowel_jamo(folded[0])
        j += 1
    return False


def _fold_slow(text: str) -> Folded:
    """Character by character, then compose jamo: the reference :func:`fold` must equal."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    cache = _FOLD
    for i, char in enumerate(text):
        folded = cache.get(char)
        if folded is None:
            folded = _fold(char)
        if not folded:
            continue
        for piece in folded:
            chars.append(piece)
            starts.append(i)
            ends.append(i + 1)
    result = "".join(chars)
    if _CONJOINING.search(result):
        result, starts, ends = _compose_jamo(result, starts, ends)
    return Folded(result, _classes_of(result), starts, ends, len(text))


def _join_spread(
    folded: str,
    classes: bytes,
    starts: Sequence[int] | None,
    ends: Sequence[int] | None,
    original_length: int,
    open_end: bool,
) -> Normalized:
    """Remove the separators inside runs of single-letter pieces."""
    padded = b"S" + classes + b"S"
    if b"SLS" not in padded:  # no single-letter piece, so no run (a cheap test)
        stable_end = original_length
        if open_end:
            stable_end = _stable_end(folded, classes, (0, 0), starts, ends, original_length)
        return Normalized(
            folded, stable_end, classes=classes if open_end else None, starts=starts, ends=ends
        )
    deleted: list[int] = []
    parts: list[str] = []
    append = parts.append
    previous = run_start = run_end = 0
    # One pass; every operation on a run is a C call.
    for found in _RUN.finditer(padded):
        # Offsets in the padded bytes are one more; the match starts with the separator.
        run_start, run_end = found.span()
        run_end -= 1
        append(folded[previous:run_start])
        if classes.find(b"SS", run_start, run_end) < 0:
            # The common case, one separator between letters: "바 보", "f.u.c.k".
            deleted.extend(range(run_start + 1, run_end, 2))
            append(folded[run_start:run_end:2])
        else:
            kept = [k for k in range(run_start, run_end) if classes[k] == _L]
            deleted.extend([k for k in range(run_start, run_end) if classes[k] == _S])
            append("".join([folded[k] for k in kept]))
        previous = run_end
    stable_end = original_length
    if open_end:
        stable_end = _stable_end(
            folded, classes, (run_start, run_end), starts, ends, original_length
        )
    if not deleted:
        return Normalized(
            folded, stable_end, classes=classes if open_end else None, starts=starts, ends=ends
        )
    append(folded[previous:])
    return Normalized(
        "".join(parts),
        stable_end,
        classes=_joined_classes(classes, deleted) if open_end else None,
        deleted=deleted,
        starts=starts,
        ends=ends,
    )


def _joined_classes(classes: bytes, deleted: list[int]) -> bytes:
    """The classes of the joined text: ``classes`` without the deleted separators."""
    parts = []
    previous = 0
    for k in deleted:
        parts.append(classes[previous:k])
        previous = k + 1
    parts.append(classes[previous:])
    return b"".join(parts)


def _stable_end(
    folded: str,
    classes: bytes,
    last_run: tuple[int, int],
    starts: Sequence[int] | None,
    ends: Sequence[int] | None,
    length: int,
) -> int:
    """Where the still-open end of a stream begins, in original offsets.

    A single-letter last piece followed by at most ``MAX_GAP`` separators (or
    by nothing) may start or extend a spread-out run: the whole run is open.
    A longer piece the text ends in may still grow, which can only change its
    last character, and only if that is a jamo or a syllable composed from
    jamo (a vowel or a final consonant may follow), or a Latin letter (a
    Latin word may not end there). Any other letter, such as a Hangul
    syllable typed as one, is final: "안녕" is stable, the next delta
    cannot change it.
    """
    letters_end = len(classes.rstrip(b"S"))
    if letters_end == 0:
        return length
    trailing = len(classes) - letters_end
    piece = classes.rfind(b"S", 0, letters_end) + 1
    if not trailing and letters_end - piece >= 2:
        last = letters_end - 1
        composed = ends is not None and starts is not None and ends[last] - starts[last] > 1
        if not composed and _is_final(folded[last]):
            return length
        return starts[last] if starts is not None else last
    if trailing and not (letters_end - piece == 1 and trailing <= MAX_GAP):
        return length
    if last_run[0] <= piece < last_run[1]:
        piece = last_run[0]
    return starts[piece] if starts is not None else piece


def _is_final(char: str) -> bool:
    """Whether a folded letter at the end of a word stays as it is whatever follows."""
    return not ("\u1100" <= char <= "\u11ff" or is_latin_letter(char))


def _compose_jamo(
    text: str, starts: Sequence[int], ends: Sequence[int]
) -> tuple[str, list[int], list[int]]:
    """Compose spelled-out jamo (lead + vowel [+ tail]) into syllables."""
    chars: list[str] = []
    new_starts: list[int] = []
    new_ends: list[int] = []
    n = len(text)
    i = 0
    while i < n:
        char = text[i]
        if i + 1 < n and _is_lead_jamo(char) and _is_vowel_jamo(text[i + 1]):
            lead, vowel = ord(char) - _L0, ord(text[i + 1]) - _V0
            tail = 0
            j = i + 2
            if j < n:
                code = ord(text[j])
                if _T0 < code <= 0x11C2:
                    tail, j = code - _T0, j + 1
                elif code in _LEAD_AS_TAIL and not (j + 1 < n and _is_vowel_jamo(text[j + 1])):
                    # "ㅂㅏㄹ": a consonant with no vowel after it closes the syllable.
                    tail, j = _LEAD_AS_TAIL[code], j + 1
            chars.append(chr(_SBASE + (lead * 21 + vowel) * 28 + tail))
            new_starts.append(starts[i])
            new_ends.append(ends[j - 1])
            i = j
            continue
        chars.append(char)
        new_starts.append(starts[i])
        new_ends.append(ends[i])
        i += 1
    return "".join(chars), new_starts, new_ends


def _fold(char: str) -> str:
    """The normalised form of one character (cached)."""
    folded = _FOLD.get(char)
    if folded is not None:
        return folded
    code = ord(char)
    if 0x4000 <= code <= 0xEFFF:
        folded = char
    else:
        folded = unicodedata.normalize("NFKC", char).casefold()
        folded = unicodedata.normalize("NFKC", folded)
        kept: list[str] = []
        for piece in folded:
            if "\uac00" <= piece <= "\ud7a3":
                kept.append(piece)
                continue
            for part in unicodedata.normalize("NFD", piece):
                if part not in _INVISIBLE and unicodedata.category(part) not in _DROPPED_CATEGORIES:
                    kept.append(part)
        folded = "".join(kept)
    if len(_FOLD) >= _FOLD_LIMIT:
        _FOLD.clear()
    _FOLD[char] = folded
    return folded


def _class_of(char: str) -> int:
    """Letter or separator, for one folded character."""
    if char.isascii():
        return _L if char.isalpha() else _S
    code = ord(char)
    if 0x4000 <= code <= 0xEFFF:
        return _L
    return _L if unicodedata.category(char)[0] in "LM" else _S


def _is_lead_jamo(char: str) -> bool:
    return "\u1100" <= char <= "\u1112"


def _is_vowel_jamo(char: str) -> bool:
    return "\u1161" <= char <= "\u1175"


def is_latin_letter(char: str) -> bool:
    """Whether a normalised character is a Latin letter (for word boundaries)."""
    return ("a" <= char <= "z") or ("\u00c0" <= char <= "\u024f" and char.isalpha())
