"""Normalisation: the folded forms, the position map, and fast path == slow path."""

from __future__ import annotations

import random

import pytest

from daehwa.guard.normalize import MAX_GAP, _fold_slow, _join_spread, fold, normalize, spread_runs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("바 보", "바보"),
        ("바.보", "바보"),
        ("바 . 보", "바보"),
        ("시1발", "시발"),
        ("b.a.d", "bad"),
        ("F U C K", "fuck"),
        ("Ｆｕｃｋ", "fuck"),  # full width
        ("fück", "fuck"),  # diacritics
        ("𝐟𝐮𝐜𝐤", "fuck"),  # mathematical bold, outside the BMP
        ("fu\u200bck", "fuck"),  # zero-width space
        ("fu\u00adck", "fuck"),  # soft hyphen
        ("Straße", "strasse"),
        ("ㅅㅂ", "\u1109\u1107"),  # compatibility jamo → conjoining
        ("ㅅ ㅂ", "\u1109\u1107"),
        ("ㅅㅣㅂㅏㄹ", "시발"),  # spelled-out jamo composed
        ("ㅂㅏㅂㅗ", "바보"),
        ("ㅋㅋㅋ", "\u110f\u110f\u110f"),
        ("안녕하세요 반가워요", "안녕하세요 반가워요"),
        ("바 보야", "바 보야"),  # a two-letter piece is never glued
        ("바" + " " * MAX_GAP + "보", "바보"),
        ("바" + " " * (MAX_GAP + 1) + "보", "바" + " " * (MAX_GAP + 1) + "보"),
        ("음… 그래", "음... 그래"),
        ("", ""),
    ],
)
def test_folded_forms(text: str, expected: str) -> None:
    assert normalize(text).text == expected


def _spans(text: str) -> list[tuple[int, int]]:
    norm = normalize(text)
    return [norm.span(i, i + 1) for i in range(len(norm.text))]


def test_position_map_points_into_the_original() -> None:
    text = "Ab 바.보 ﬁ ㅅㅣㅂㅏㄹ z\u200bz"
    norm = normalize(text)
    assert norm.text == "ab 바보 fi 시발 zz"
    assert norm.span(3, 5) == (3, 6)  # "바.보"
    assert norm.span(6, 8) == (7, 8)  # the ligature: both letters come from one character
    assert norm.span(9, 11) == (9, 14)  # five jamo became two syllables
    assert norm.span(12, 14) == (15, 18)  # across the zero-width space
    for start, end in _spans(text):
        assert 0 <= start < end <= len(text)


def test_word_boundary_inside_a_spread_out_run() -> None:
    norm = normalize("c l a s s")
    assert norm.text == "class"
    assert norm.is_word_boundary(2)  # letters came from apart
    assert not normalize("class").is_word_boundary(2)


ALPHABET = [
    *"바보시발개새끼 ab.1Z",
    " ",
    "  ",
    "\u200b",
    "ㅅ",
    "ㅂ",
    "ㅣ",
    "ㅏ",
    "ㄹ",
    "ß",
    "…",
    "Ａ",
    "é",
    "·",
    "😀",
    "\u1109",
    "\u1161",
]


@pytest.mark.parametrize("seed", range(20))
def test_fast_path_equals_slow_path(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 14)))
        fast = normalize(text, open_end=True)
        slow = _join_spread(*_fold_slow(text), True)
        assert fast.text == slow.text, text
        assert [fast.span(i, i + 1) for i in range(len(fast.text))] == [
            slow.span(i, i + 1) for i in range(len(slow.text))
        ], text
        assert fast.stable_end == slow.stable_end, text


@pytest.mark.parametrize(
    ("text", "stable_end"),
    [
        ("안녕하세요 ", 6),  # a closed word
        ("안녕하세요", 5),  # the word may go on, but a syllable typed whole stays as it is
        ("abc", 2),  # a Latin word may go on: its last letter decides its boundary
        ("가ㅂㅏ", 1),  # a syllable composed from jamo may take a final consonant
        ("ㄱㅏㄴ", 0),  # "간" might still become "가" + "나…"
        ("가ㄱㅏ", 1),
        ("안녕 바", 3),  # a single letter may start a spread-out run
        ("안녕 바 ", 3),
        ("안녕 바" + " " * (MAX_GAP + 1), 4 + MAX_GAP + 1),  # too far apart to join
        ("가 나 다", 0),  # the whole run is open
        ("가 나 다라 ", 7),
        ("...", 3),
        ("ㅂㅏ", 0),  # jamo may still take a final consonant
    ],
)
def test_stable_end(text: str, stable_end: int) -> None:
    assert normalize(text, open_end=True).stable_end == stable_end
    assert normalize(text).stable_end == len(text)


def _runs_by_definition(classes: bytes) -> list[list[int]]:
    """Letter indices of each run of single-letter pieces at most MAX_GAP apart (≥ 2 letters)."""
    singles = [
        i
        for i in range(len(classes))
        if classes[i : i + 1] == b"L"
        and (i == 0 or classes[i - 1 : i] == b"S")
        and classes[i + 1 : i + 2] != b"L"
    ]
    runs: list[list[int]] = []
    for i in singles:
        previous = runs[-1][-1] if runs else None
        # Two consecutive single letters with at most MAX_GAP separators between join.
        if previous is not None and i - previous - 1 <= MAX_GAP:
            runs[-1].append(i)
            continue
        runs.append([i])
    return [run for run in runs if len(run) >= 2]


RUN_ALPHABET = ["가", "나", "a", "b", "다라", "xy", " ", " ", " ", ".", "1", "  ", "\u200b", "ㅅ"]


@pytest.mark.parametrize("seed", range(20))
def test_spread_runs_match_the_definition(seed: int) -> None:
    # The common runs (one separator between letters) are cut by C slicing with
    # no per-run Python work; texts with a wider gap take the general path.
    rng = random.Random(seed)
    fast = 0
    for _ in range(200):
        text = "".join(rng.choice(RUN_ALPHABET) for _ in range(rng.randint(0, 24)))
        folded = fold(text)
        expected = _runs_by_definition(folded.classes)
        runs = spread_runs(folded.text, folded.classes)
        if not expected:
            assert runs is None, text
            continue
        assert runs is not None, text
        fast += runs.letters is None
        pieces = runs.joined.split("\x00")
        found = [[runs.letter(k, j) for j in range(len(piece))] for k, piece in enumerate(pieces)]
        assert found == expected, text
        assert pieces == ["".join(folded.text[i] for i in run) for run in expected], text
        assert list(zip(runs.starts, runs.ends, strict=True)) == [
            (r[0], r[-1] + 1) for r in expected
        ]
        for i in range(len(folded.text)):
            assert runs.covers(i) == any(r[0] <= i <= r[-1] for r in expected), (text, i)
    assert fast >= 5  # the alternating path was exercised
