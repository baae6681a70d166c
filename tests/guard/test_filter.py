"""ContentFilter over whole texts: what matches, where, and the word files."""

from __future__ import annotations

from pathlib import Path

import pytest

from daehwa.errors import ConfigError
from daehwa.guard import SAMPLE_WORDS, ContentFilter, Match, read_word_files

WORDS = ["바보", "시발", "개새끼", "ㅅㅂ", "fuck", "ass", "bad", "bad boy", "shit"]


@pytest.fixture(scope="module")
def words() -> ContentFilter:
    return ContentFilter(WORDS)


def test_match_reports_original_offsets_and_the_listed_word(words: ContentFilter) -> None:
    text = "이 바 . 보 같은"
    [match] = words.scan(text)
    assert match == Match(start=2, end=7, word="바보")
    assert text[match.start : match.end] == "바 . 보"
    assert words.mask(text) == "이 ***** 같은"


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("너 바보야", "바보"),  # Korean words match inside a word (particles)
        ("시 발", "시발"),
        ("시1발", "시발"),
        ("시.발", "시발"),
        ("ㅅㅣㅂㅏㄹ", "시발"),
        ("ㅅㅂ", "ㅅㅂ"),
        ("ㅅ ㅂ", "ㅅㅂ"),
        ("\u1109\u1107", "ㅅㅂ"),  # typed as conjoining jamo
        ("개\u200b새\u200b끼", "개새끼"),
        ("FUCK", "fuck"),
        ("Ｆｕｃｋ", "fuck"),
        ("f.u.c.k", "fuck"),
        ("f u c k", "fuck"),
        ("fück", "fuck"),
        ("what the fuck이야", "fuck"),  # Hangul after a Latin word is a boundary
        ("fuck123", "fuck"),
    ],
)
def test_catches(words: ContentFilter, text: str, word: str) -> None:
    assert [m.word for m in words.scan(text)] == [word]


@pytest.mark.parametrize(
    "text",
    [
        "a classic passage",  # "ass" inside English words
        "badge",
        "shitake",  # not on a right boundary
        "바 보야",  # a two-letter piece is not glued to a single one
        "할 수 있다 좀 더 잘 해 봐",
        "오늘 서울 날씨는 맑고 따뜻합니다.",
        "",
    ],
)
def test_does_not_flag(words: ContentFilter, text: str) -> None:
    assert words.scan(text) == []
    assert words.mask(text) == text


def test_leftmost_longest_and_no_overlap(words: ContentFilter) -> None:
    assert [m.word for m in words.scan("바보 시발 바보")] == ["바보", "시발", "바보"]
    assert [m.word for m in words.scan("bad boy")] == ["bad boy"]


def test_shorter_word_wins_when_the_longer_fails_its_boundary(words: ContentFilter) -> None:
    # "bad boy" is found first but "bad boys" does not end on a boundary; "bad" does.
    assert words.scan("bad boys") == [Match(0, 3, "bad")]


def test_mask_keeps_the_length(words: ContentFilter) -> None:
    text = "ㅅㅣㅂㅏㄹ, 진짜 f.u.c.k"
    masked = words.mask(text)
    assert len(masked) == len(text)
    assert masked == "*****, 진짜 *******"
    assert words.mask("바보", char="♡") == "♡♡"


def test_empty_list_matches_nothing() -> None:
    empty = ContentFilter([])
    assert len(empty) == 0
    assert empty.max_length == 0
    assert empty.scan("바보 fuck") == []
    assert empty.mask("바보") == "바보"


def test_variants_of_one_word_collapse() -> None:
    f = ContentFilter(["바보", "바 보", "ㅂㅏㅂㅗ", "  ", "", "BAD", "bad"])
    assert len(f) == 2
    assert [m.word for m in f.scan("바보 bad")] == ["바보", "BAD"]


def test_from_files(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    first.write_text("\ufeff# a comment\n바보\n\n  시발  \n#not a word\n", encoding="utf-8")
    second = tmp_path / "b.txt"
    second.write_text("fuck\r\n", encoding="utf-8")
    assert read_word_files([first, second]) == ["바보", "시발", "fuck"]
    f = ContentFilter.from_files([first, second])
    assert [m.word for m in f.scan("바보 시발 fuck")] == ["바보", "시발", "fuck"]


def test_from_files_names_the_bad_file(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.txt.*not UTF-8"):
        ContentFilter.from_files([latin1])
    with pytest.raises(ConfigError, match=r"missing\.txt"):
        ContentFilter.from_files([tmp_path / "missing.txt"])


def test_sample_list_ships_with_the_package() -> None:
    f = ContentFilter.from_files([SAMPLE_WORDS])
    assert len(f) > 40
    assert f.mask("이 ㅅ ㅂ 진짜 개.새.끼") == "이 *** 진짜 *****"


def test_public_names_and_examples() -> None:
    import doctest

    import daehwa.guard

    assert sorted(daehwa.guard.__all__) == [
        "BLOCKED_MESSAGE",
        "ContentFilter",
        "ContentGuard",
        "FilterHolder",
        "InputVerdict",
        "MASK_CHAR",
        "Match",
        "SAMPLE_WORDS",
        "StreamFilter",
        "apply_mask",
        "read_word_files",
    ]
    assert doctest.testmod(daehwa.guard).failed == 0


@pytest.mark.parametrize("seed", range(15))
def test_scan_equals_scanning_the_joined_text(seed: int) -> None:
    # scan() looks at the folded text and the joined spread-out runs apart; it
    # must find exactly what scanning the fully normalised text finds.
    import random

    from daehwa.guard.normalize import normalize

    rng = random.Random(seed)
    letters = ["가", "나", "다", "a", "b", "ㅅ", "ㅂ"]
    vocabulary = {"".join(rng.choice(letters) for _ in range(rng.randint(1, 4))) for _ in range(30)}
    content_filter = ContentFilter(sorted(vocabulary))
    assert not content_filter._automaton.separators
    alphabet = [*letters, "ㅏ", " ", "  ", ".", "1", "\u200b", "ß", "A"]
    for _ in range(100):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        assert content_filter.scan(text) == content_filter.find_normalized(normalize(text)), text


@pytest.mark.parametrize("seed", range(5))
def test_can_grow_is_whether_a_longer_word_begins_with_the_text(seed: int) -> None:
    # The stream filter holds text back exactly when this says yes; its shortcuts
    # (the first one and two characters of longer words) must agree with the definition.
    import random

    rng = random.Random(seed)
    letters = ["가", "나", "다", "a", "b", " "]
    words = {
        "".join(rng.choice(letters) for _ in range(rng.randint(1, 5))).strip() for _ in range(60)
    }
    content_filter = ContentFilter(sorted(w for w in words if w))
    patterns = content_filter._automaton._sorted
    for _ in range(400):
        text = "".join(rng.choice(letters) for _ in range(rng.randint(1, 6)))
        expected = any(len(p) > len(text) and p.startswith(text) for p in patterns)
        assert content_filter.can_grow(text) == expected, text
