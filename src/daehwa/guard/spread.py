"""Spread-out words: runs of single-letter pieces, found and joined.

Step 3 of the normalisation (see :mod:`daehwa.guard.normalize`): ``바 보``,
``바.보``, ``시1발`` and ``b.a.d`` lose their separators. Runs are found by one
regex over the letter/separator classes of the folded text; the common,
alternating ones are cut as step-2 slices.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import chain, repeat
from operator import sub

from daehwa.guard.folding import _L, _S, is_latin_letter
from daehwa.guard.offsets import Normalized

__all__ = ["MAX_GAP", "SpreadRuns", "spread_runs"]

#: Separators allowed between two letters of a spread-out word ("바 . 보").
MAX_GAP = 3

# A single letter, then more single letters each after 1..MAX_GAP separators.
_RUN = re.compile(f"SLS(?:S{{0,{MAX_GAP - 1}}}L)(?:S{{1,{MAX_GAP}}}L)*(?=S)".encode())
# A run of single letters one separator apart, in the padded classes. The match
# starts at the separator before the run, so its start is the run's first letter
# in the unpadded text, and its end one more than the end of the run.
_ALTERNATING_RUN = re.compile(rb"SLSL(?:SL)*(?=S)")
# Two single letters 2..MAX_GAP separators apart: a run that does not alternate.
_WIDE_GAP = re.compile(f"SLSS{{1,{MAX_GAP - 1}}}LS".encode())
_SPAN = re.Match.span


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
