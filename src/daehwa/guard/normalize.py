"""Text normalisation for matching, with a map back to the original offsets.

The filter matches banned words against a *normalised* view of the text, then
reports offsets in the original. One function, :func:`normalize`, is used for
the word list and for the text alike, so both sides fold the same way (steps 1
and 2 are in :mod:`daehwa.guard.folding`, step 3 in :mod:`daehwa.guard.spread`):

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

from daehwa.guard.folding import (
    _CLASS_TABLE,
    _CONTINUATION,
    _U,
    _UPPER_TO_LETTER,
    _X,
    Folded,
    _fold_special,
    fold,
    is_latin_letter,
)
from daehwa.guard.folding import _fold_slow as _fold_slow  # the reference fold, for tests
from daehwa.guard.offsets import Normalized
from daehwa.guard.spread import MAX_GAP, SpreadRuns, _join_spread, _stable_end, spread_runs

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
