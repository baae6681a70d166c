"""Synthetic data for the content-filter benchmark (no downloaded data).

- :func:`banned_words`: a large word list, Korean and English, seeded.
- :func:`clean_sentences`: ordinary Korean sentences from a hand-written
  grammar, rich in one-syllable words (시, 개, 새, 발, 병, 끼, 좀, 더 …), the
  case where joining spread-out letters could glue innocent words together.
- :func:`mixed_message`: a chat message of Korean and English, a given length.
- :func:`evasions`: spread-out, spelled-out and disguised forms of a word.
"""

from __future__ import annotations

import contextlib
import random
import unicodedata

# Common syllables, so generated words look like Korean words rather than noise.
_COMMON = (
    "가각간갈감강개거건걸검게겨결경계고공과관광교구국군권귀그극근글금기길김까깨꼬꽃꾸끝"
    "나난날남낭내너널네노논놀농누눈뉴느는늘니다단달담당대더덕도독돈동되두둘드든들등디따"
    "때또뚜라락란람랑래러럽레려력련렬령로록론료루류르른를름리린림마막만말망매머먹멀메며"
    "면명모목몸못무문물미민밀바박반발밤방배백버번범법벽변별병보복본봉부북분불비빛빠사산"
    "살삼상새색생서석선설성세소속손송수숙순술쉬스슬습시식신실심십싸쓰아악안알암압앙애야"
    "약양어억언얼엄업에여역연열염영예오옥온올옷와완왕외요용우운울움원월위유육윤은을음의"
    "이익인일임입자작잔잘잠장재저적전절점정제조족존종좋주죽준중즐지직진질집짜째차착찬참"
    "창채책처천철청체초촌총최추축출충취치친칠침카커코크키타탁탄탈태터토통투트특티파판팔"
    "패퍼페편평포표품프피필하학한할함합항해핵행향허험혁현혈협형호혹혼홍화확환활황회효후훈휴흐흑희힘"
)

_NOUNS = [
    "사람",
    "친구",
    "학교",
    "회사",
    "날씨",
    "서울",
    "부산",
    "공원",
    "시장",
    "음식",
    "점심",
    "저녁",
    "커피",
    "영화",
    "음악",
    "여행",
    "주말",
    "가족",
    "부모님",
    "동생",
    "선생님",
    "학생",
    "회의",
    "발표",
    "보고서",
    "프로젝트",
    "컴퓨터",
    "휴대폰",
    "버스",
    "지하철",
    "기차",
    "비행기",
    "자동차",
    "도서관",
    "병원",
    "은행",
    "우체국",
    "식당",
    "카페",
    "호텔",
    "바다",
    "하늘",
    "산",
    "강",
    "나무",
    "꽃",
    "시간",
    "오늘",
    "내일",
    "어제",
    "아침",
    "오후",
    "저녁",
    "밤",
    "봄",
    "여름",
    "가을",
    "겨울",
    "생일",
    "선물",
    "편지",
    "사진",
    "숙제",
    "시험",
]
_ONE = [
    "개",
    "새",
    "발",
    "시",
    "병",
    "끼",
    "신",
    "집",
    "밥",
    "물",
    "차",
    "책",
    "돈",
    "일",
    "날",
    "말",
    "눈",
    "손",
    "꽃",
    "옷",
    "길",
    "문",
    "방",
    "빵",
    "술",
    "잠",
    "꿈",
    "힘",
    "값",
    "맛",
    "것",
    "수",
    "때",
    "곳",
    "줄",
    "분",
    "번",
    "명",
    "장",
    "권",
    "살",
    "층",
    "채",
    "잔",
    "알",
]
_ADVERBS = [
    "좀",
    "더",
    "잘",
    "안",
    "못",
    "또",
    "꼭",
    "늘",
    "참",
    "다",
    "막",
    "곧",
    "꽤",
    "너무",
    "정말",
    "아주",
    "조금",
    "많이",
    "빨리",
    "천천히",
]
_COUNTERS = ["한", "두", "세", "네", "다섯", "여섯", "몇"]
_DETS = ["이", "그", "저", "새", "헌", "옛", "온", "모든", "어느", "무슨"]
_PLACES = [
    "집",
    "학교",
    "회사",
    "공원",
    "시장",
    "식당",
    "카페",
    "병원",
    "은행",
    "도서관",
    "바다",
    "산",
]
_VERBS = [
    ("먹", "어요"),
    ("가", "요"),
    ("오", "세요"),
    ("보", "았어요"),
    ("하", "ㅂ니다"),
    ("사", "요"),
    ("읽", "었다"),
    ("만나", "요"),
    ("쉬", "어요"),
    ("기다리", "세요"),
    ("있", "어요"),
    ("없", "다"),
    ("좋", "아요"),
    ("싫", "어"),
    ("바쁘", "다"),
    ("놀", "자"),
    ("자", "요"),
    ("걷", "는다"),
]
_TEMPLATES = [
    "{det} {noun}{subj} {adv} {verb}.",
    "{time} {place}에서 {noun}{obj} {verb}.",
    "{counter} {one} {adv} {verb}?",
    "{noun}{subj} {counter} {one} {verb}.",
    "{det} {one} {adv} {adv2} {verb}.",
    "{time} {counter} 시 {counter2} 분에 {noun}{obj} {verb}.",
    "{one} {one2} {noun} {verb}.",
    "{noun}{top} {det} {one}{obj} {verb}.",
    "{adv} {one} 한 {one2} {verb}.",
    "{place}에 {counter} 번 {verb}.",
]
_TIMES = ["오늘", "내일", "어제", "아침에", "저녁에", "주말에", "방금", "이따가", "지금"]


def _compose(stem: str, ending: str) -> str:
    if ending.startswith("ㅂ"):  # 하 + ㅂ니다 → 합니다
        last = stem[-1]
        code = ord(last) - 0xAC00
        return stem[:-1] + chr(ord(last) + 17 - code % 28) + ending[1:]
    return stem + ending


def _particle(word: str, with_final: str, without: str) -> str:
    code = ord(word[-1]) - 0xAC00
    return with_final if 0 <= code < 11172 and code % 28 else without


def clean_sentences(count: int, seed: int = 7) -> list[str]:
    """``count`` ordinary Korean sentences, none containing an insult."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        template = rng.choice(_TEMPLATES)
        noun = rng.choice(_NOUNS)
        one = rng.choice(_ONE)
        fill = {
            "det": rng.choice(_DETS),
            "noun": noun,
            "subj": _particle(noun, "이", "가"),
            "obj": _particle(one if "{one}{obj}" in template else noun, "을", "를"),
            "top": _particle(noun, "은", "는"),
            "adv": rng.choice(_ADVERBS),
            "adv2": rng.choice(_ADVERBS),
            "verb": _compose(*rng.choice(_VERBS)),
            "time": rng.choice(_TIMES),
            "place": rng.choice(_PLACES),
            "counter": rng.choice(_COUNTERS),
            "counter2": rng.choice(_COUNTERS),
            "one": one,
            "one2": rng.choice(_ONE),
        }
        sentences.append(template.format(**fill))
    return sentences


def banned_words(count: int, seed: int = 1) -> list[str]:
    """``count`` distinct words: 60% Korean (2-4 syllables), 40% English (4-10 letters)."""
    rng = random.Random(seed)
    words: set[str] = set()
    korean = count * 6 // 10
    while len(words) < korean:
        syllables = rng.choice((2, 2, 3, 3, 3, 4))
        words.add(
            "".join(
                rng.choice(_COMMON) if rng.random() < 0.3 else chr(0xAC00 + rng.randrange(11172))
                for _ in range(syllables)
            )
        )
    while len(words) < count:
        words.add("".join(chr(97 + rng.randrange(26)) for _ in range(rng.randint(4, 10))))
    return sorted(words)


_ENGLISH = [
    "The meeting moved to Thursday afternoon, so please check the shared calendar.",
    "Our Python service handles streaming responses over server-sent events.",
    "Could you send me the report before lunch?",
    "Thanks a lot for your help.",
    "Let me know if the deployment on Kubernetes works now.",
]


def mixed_message(length: int = 1000, *, seed: int = 3, insert: tuple[str, ...] = ()) -> str:
    """A chat message of Korean sentences and English, exactly ``length`` characters.

    ``insert`` words are placed inside it (to give the scan something to find).
    """
    rng = random.Random(seed)
    korean = clean_sentences(200, seed=seed)
    parts: list[str] = []
    size = 0
    while size < length:
        piece = rng.choice(korean) if rng.random() < 0.75 else rng.choice(_ENGLISH)
        if insert and rng.random() < 0.1:
            piece = f"{piece} {rng.choice(insert)}"
        parts.append(piece)
        size += len(piece) + 1
    text = " ".join(parts)
    for word in insert:  # make sure each inserted word is in the final text
        if word not in text[:length]:
            middle = text.index(" ", length // 2)
            text = text[:middle] + f" {word}" + text[middle:]
    return text[:length]


def _spelled_out(word: str) -> str | None:
    """The word as separate compatibility jamo ("바보" → "ㅂㅏㅂㅗ"), if it is Hangul."""
    out = []
    for char in unicodedata.normalize("NFD", word):
        compat = _TO_COMPAT.get(char)
        if compat is None:
            return None
        out.append(compat)
    return "".join(out)


def _compat_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for code in range(0x3131, 0x3164):
        compat = chr(code)
        name = unicodedata.name(compat, "").replace("HANGUL LETTER ", "")
        conjoining = unicodedata.normalize("NFKC", compat)
        table[conjoining] = compat
        with contextlib.suppress(KeyError):
            table[unicodedata.lookup(f"HANGUL JONGSEONG {name}")] = compat
    return table


_TO_COMPAT = _compat_table()


def evasions(word: str) -> dict[str, str]:
    """Disguised forms of ``word`` a user might type, by kind."""
    letters = list(word)
    forms = {
        "spaces": " ".join(letters),
        "dots": ".".join(letters),
        "spaced dots": " . ".join(letters),
        "digits": "1".join(letters),
        "symbols": "*".join(letters),
        "zero-width": "\u200b".join(letters),
        "full width": "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in word),
        "upper case": word.upper(),
    }
    spelled = _spelled_out(word)
    if spelled is not None:
        forms["jamo"] = spelled
    if word.isascii():
        forms["diacritics"] = word.replace("u", "ü").replace("a", "á").replace("i", "í")
    return {kind: f"야 {form} 진짜" for kind, form in forms.items() if form != word}
