"""StreamFilter: a banned word split anywhere across deltas never reaches the client,
and what is released adds up to exactly ``ContentFilter.mask`` of the whole text."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable

import pytest

from daehwa.guard import ContentFilter, Match, StreamFilter

WORDS = ["바보", "시발", "개새끼", "ㅅㅂ", "fuck", "bad", "bad boy", "ass", "씨 발 놈"]

TEXTS = [
    "넌 바보야",
    "이 시 1 발 놈아",
    "시.발",
    "ㅅㅣㅂㅏㄹ 진짜",
    "ㅅ ㅂ ㅋㅋ",
    "개\u200b새\u200b끼 같은",
    "what the f.u.c.k, bad boys",
    "a classic bad boy",
    "Ｆｕｃｋ!",
    "씨 발 놈 아",
    "할 수 있다 좀 더 잘 해 봐",
    "바바바보보",
]


@pytest.fixture(scope="module")
def words() -> ContentFilter:
    return ContentFilter(WORDS)


def stream(content_filter: ContentFilter, chunks: Iterable[str]) -> str:
    """Feed ``chunks``; check every release is a prefix of the final masked text."""
    chunks = list(chunks)
    expected = content_filter.mask("".join(chunks))
    s = StreamFilter(content_filter)
    released = ""
    for chunk in chunks:
        released += s.feed(chunk)
        assert expected.startswith(released), (chunks, released, expected)
    released += s.flush()
    assert released == expected, chunks
    return released


def splits(text: str, cuts: int) -> Iterable[list[str]]:
    for points in itertools.combinations(range(1, len(text)), cuts):
        bounds = (0, *points, len(text))
        yield [text[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("text", TEXTS)
def test_split_at_every_position(words: ContentFilter, text: str) -> None:
    for chunks in splits(text, 1):
        stream(words, chunks)


@pytest.mark.parametrize("text", TEXTS)
def test_split_at_every_pair_of_positions(words: ContentFilter, text: str) -> None:
    for chunks in splits(text, 2):
        stream(words, chunks)


@pytest.mark.parametrize("text", TEXTS)
def test_one_character_at_a_time(words: ContentFilter, text: str) -> None:
    stream(words, list(text))


def test_spread_out_word_split_across_chunks_never_leaks(words: ContentFilter) -> None:
    s = StreamFilter(words)
    out = [s.feed("좋아 시 "), s.feed("1 "), s.feed("발 진짜"), s.feed(" 그래"), s.flush()]
    assert "".join(out) == "좋아 ***** 진짜 그래"
    assert "시" not in "".join(out[:2])  # held until the run was decided


ALPHABET = [*"바보시발개새끼놈 ab.1fuckZ", " ", "\u200b", "ㅅ", "ㅂ", "ㅣ", "ㅏ", "ㄹ", "ß", "…"]


@pytest.mark.parametrize("seed", range(30))
def test_random_texts_and_chunkings(words: ContentFilter, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(40):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40)))
        chunks, i = [], 0
        while i < len(text):
            n = rng.randint(1, 6)
            chunks.append(text[i : i + n])
            i += n
        stream(words, chunks)


def test_holds_back_only_what_could_still_become_a_word(words: ContentFilter) -> None:
    s = StreamFilter(words)
    assert s.feed("안녕하세요, ") == "안녕하세요, "
    assert s.held == 0
    assert s.feed("반갑") == "반갑"  # a syllable typed whole cannot change, no word begins here
    assert s.feed("습니다 ") == "습니다 "
    assert s.feed("가ㄱㅏ") == "가"  # spelled-out jamo may still take a final consonant
    assert s.feed("ㅂ ") == "ㄱㅏㅂ "
    assert s.feed("goo") == "go"  # a Latin word may go on: its end decides its boundary
    assert s.feed("d ") == "od "
    assert s.feed("바") == ""  # could become 바보
    assert s.held == 1
    assert s.feed("다 ") == "바다 "
    assert s.feed("fu") == ""  # could become "fuck"
    assert s.feed("n ") == "fun "
    assert s.flush() == ""


def test_matches_have_offsets_in_the_whole_stream(words: ContentFilter) -> None:
    s = StreamFilter(words)
    text = "처음엔 괜찮다가 바보 그리고 시 발"
    for ch in text:
        s.feed(ch)
    s.flush()
    assert s.matches == [Match(9, 11, "바보"), Match(16, 19, "시발")]
    assert s.matches == words.scan(text)


def test_empty_filter_passes_everything_at_once() -> None:
    s = StreamFilter(ContentFilter([]))
    assert s.feed("바보") == "바보"
    assert s.held == 0
    assert s.flush() == ""


def test_feed_after_flush_is_an_error(words: ContentFilter) -> None:
    s = StreamFilter(words)
    s.feed("바")
    assert s.flush() == "바"
    assert s.flush() == ""
    with pytest.raises(RuntimeError):
        s.feed("보")


def test_long_unspaced_text_keeps_a_small_window(words: ContentFilter) -> None:
    s = StreamFilter(words)
    text = "가나다라마바사아자차카타파하" * 300
    out = "".join(s.feed(text[i : i + 3]) for i in range(0, len(text), 3)) + s.flush()
    assert out == words.mask(text)
    assert len(s._window) == 0
    s = StreamFilter(words)
    for i in range(0, len(text), 3):
        s.feed(text[i : i + 3])
        assert len(s._window) < 70  # each delta normalises a few dozen characters at most


def test_endless_spread_out_run_is_released_after_max_hold(words: ContentFilter) -> None:
    s = StreamFilter(words, max_hold=100)
    for _ in range(500):
        s.feed("ㅋ ")
        assert s.held <= 102


@pytest.mark.parametrize("separators", [True, False])
@pytest.mark.parametrize("seed", range(10))
def test_dense_overlapping_words(seed: int, separators: bool) -> None:
    # Many short words over a tiny alphabet: matches overlap and nest everywhere,
    # Latin words need boundaries, and (or not) some words contain a separator,
    # which changes how ContentFilter.scan works inside.
    rng = random.Random(seed)
    letters = ["가", "나", "다", "a", "b"]
    vocabulary = {"".join(rng.choice(letters) for _ in range(rng.randint(1, 4))) for _ in range(40)}
    if separators:
        vocabulary |= {"a b", "가 나다"}
    content_filter = ContentFilter(sorted(vocabulary))
    alphabet = [*letters, " ", ".", "1"]
    for _ in range(30):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        chunks, i = [], 0
        while i < len(text):
            n = rng.randint(1, 4)
            chunks.append(text[i : i + n])
            i += n
        stream(content_filter, chunks)


# Words that end a token inside a longer word: released at once unless the
# text from some position on could still become a banned word.
EAGER_WORDS = ["개새끼", "미친놈", "병신", "씨발놈", "fuck", "bitch", "바보"]
EAGER_TEXTS = [
    "너개새끼야",
    "진짜미친놈이네",
    "이병신아 왜그래",
    "안녕하세요씨발놈아",
    "개새 개새끼",
    "미친 미친놈",
    "bitchy bitch",
    "fuckers fuck",
    "개 새 끼 같은",
    "미.친.놈",
    "병1신",
    "씨 발 놈 아",
    "ㅂㅕㅇㅅㅣㄴ",
]


@pytest.mark.parametrize("text", EAGER_TEXTS)
def test_eager_release_never_leaks_a_word_split_anywhere(text: str) -> None:
    content_filter = ContentFilter(EAGER_WORDS)
    assert content_filter.scan(text)  # every text has a word to hide
    for chunks in itertools.chain(splits(text, 1), splits(text, 2)):
        stream(content_filter, chunks)  # each release must be a prefix of the masked text
    stream(content_filter, list(text))


def test_a_word_that_cannot_become_banned_is_released_at_once() -> None:
    s = StreamFilter(ContentFilter(EAGER_WORDS))
    assert s.feed("안녕") == "안녕"  # no banned word begins with 안, 녕 or 안녕
    assert s.feed("하세") == "하세"
    assert s.feed("요 개") == "요 "  # 개 may begin 개새끼
    assert s.feed("새") == ""
    assert s.feed("로운") == "개새로운"  # 개새로 is no word's beginning
    assert s.feed(" 미친") == " "
    assert s.feed("놈") == "***"  # complete, and no longer word begins with it
    assert s.feed("아") == "아"
    assert s.flush() == ""
