"""Per-character folding, with a map from folded to original offsets.

Steps 1 and 2 of the normalisation (see :mod:`daehwa.guard.normalize`): NFKC,
case folding, diacritics and invisible characters removed, compatibility jamo
made conjoining, and spelled-out jamo composed into syllables. Characters are
classified by translating their UTF-8 bytes, so the common case (Hangul, CJK
and ASCII) never loops over characters in Python.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Folded", "fold", "is_latin_letter"]

_L, _S, _U, _X = b"L"[0], b"S"[0], b"U"[0], b"X"[0]


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
