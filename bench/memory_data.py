"""Generates long Korean conversations with planted facts and late questions.

The memory-fidelity benchmark (bench/memory_fidelity.py) and the token-estimate
calibration (bench/token_estimates.py) use this data; nothing is hand-picked: every
conversation comes from templates and a seeded random generator.

    python -m bench.memory_data --conversations 3 --seed 7 > conversations.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass, field

CITIES = [
    "대전",
    "광주",
    "울산",
    "청주",
    "전주",
    "춘천",
    "포항",
    "창원",
    "제주",
    "강릉",
    "여수",
    "목포",
]
NAMES = ["김민준", "이서연", "박도윤", "최하은", "정시우", "강지유", "조예준", "윤수아", "장하준"]
FOODS = [
    "김치찌개",
    "된장찌개",
    "비빔밥",
    "냉면",
    "떡볶이",
    "삼계탕",
    "잡채",
    "칼국수",
    "순두부찌개",
]
PETS = ["초코", "콩이", "보리", "두부", "망고", "감자", "호두", "모카"]
JOBS = ["간호사", "초등학교 교사", "웹 개발자", "회계사", "요리사", "건축가", "약사", "번역가"]
HOBBIES = ["등산", "수영", "뜨개질", "사진 찍기", "기타 연주", "볼링", "캠핑", "서예"]
ALLERGIES = ["땅콩", "복숭아", "새우", "우유", "메밀", "게"]
COLORS = ["보라색", "하늘색", "연두색", "주황색", "남색", "분홍색"]
FRIENDS = ["친구", "동생", "언니", "형", "사촌", "직장 동료", "옆집 아저씨"]

# One kind of fact: how the user states it, how they ask about it much later, and the
# values it takes. A distractor states the same kind of fact about someone else.
FACT_KINDS: list[tuple[str, list[str], list[str], list[str], list[str]]] = [
    (
        "city",
        ["나는 {v}에 살아.", "참고로 난 {v}에 살고 있어.", "우리 집은 {v}에 있어."],
        ["내가 어디 산다고 했었지?", "내가 사는 도시가 어디였지?"],
        ["내 {f}는 {v}에 살아.", "{f}가 이번에 {v}{으로} 이사 갔대."],
        CITIES,
    ),
    (
        "name",
        ["내 이름은 {v}{이야}.", "나 {v}{이라고} 해. 기억해 줘."],
        ["내 이름이 뭐라고 했지?", "내 이름 기억나?"],
        ["내 {f} 이름은 {v}{이야}."],
        NAMES,
    ),
    (
        "food",
        ["나는 {v}{을} 제일 좋아해.", "내가 세상에서 제일 좋아하는 음식은 {v}{이야}."],
        ["내가 제일 좋아하는 음식이 뭐라고 했지?", "내 최애 음식 기억나?"],
        ["내 {f}는 {v}{을} 엄청 좋아하더라."],
        FOODS,
    ),
    (
        "pet",
        ["우리 강아지 이름은 {v}{이야}.", "내가 키우는 강아지가 있는데 이름이 {v}{이야}."],
        ["우리 강아지 이름이 뭐였지?", "내 강아지 이름 기억해?"],
        ["내 {f}네 고양이 이름은 {v}{이래}."],
        PETS,
    ),
    (
        "job",
        ["나는 {v}{으로} 일하고 있어.", "내 직업은 {v}{이야}."],
        ["내 직업이 뭐라고 했었지?", "내가 무슨 일 한다고 했지?"],
        ["내 {f}는 {v}{으로} 일해."],
        JOBS,
    ),
    (
        "hobby",
        ["요즘 내 취미는 {v}{이야}.", "주말마다 {v}{을} 해. 그게 내 유일한 취미야."],
        ["내 취미가 뭐라고 했지?", "내가 주말마다 뭐 한다고 했었지?"],
        ["내 {f}는 {v}에 빠져 있어."],
        HOBBIES,
    ),
    (
        "allergy",
        ["나 {v} 알레르기가 있어.", "나는 {v}{을} 먹으면 알레르기 반응이 나."],
        ["내가 무슨 알레르기 있다고 했지?", "나 못 먹는 음식이 뭐였지?"],
        ["내 {f}는 {v} 알레르기가 있대."],
        ALLERGIES,
    ),
    (
        "color",
        ["내가 제일 좋아하는 색은 {v}{이야}.", "나는 {v}{을} 제일 좋아해."],
        ["내가 좋아하는 색깔이 뭐라고 했지?", "내 최애 색 기억나?"],
        ["내 {f}는 {v}만 입어."],
        COLORS,
    ),
]

TOPICS = [
    ("날씨", ["{c} 날씨 어때?", "내일 {c}에 비 온대?", "이번 주말 {c} 기온은 몇 도야?"]),
    ("여행", ["{c}에 가면 뭐 봐야 해?", "{c} 여행 코스 추천해 줘.", "{c}까지 기차로 얼마나 걸려?"]),
    ("요리", ["{d} 만드는 법 알려줘.", "{d}에 뭐 넣으면 맛있어?", "{d} 칼로리가 얼마나 돼?"]),
    (
        "코딩",
        ["파이썬에서 {p} 어떻게 해?", "{p} 예제 코드 보여줘.", "{p}할 때 자주 하는 실수가 뭐야?"],
    ),
    (
        "영화",
        [
            "요즘 볼만한 {g} 영화 있어?",
            "{g} 영화 중에 명작 추천해 줘.",
            "{g} 장르 좋아하는 사람한테 뭐 추천해?",
        ],
    ),
    (
        "건강",
        [
            "{h}에 좋은 운동 알려줘.",
            "{h} 때문에 고민이야. 어떻게 해야 해?",
            "{h} 관리하는 팁 있어?",
        ],
    ),
    ("일상", ["오늘 {t} 너무 피곤하다.", "{t} 뭐 하면 좋을까?", "{t}에 할 만한 거 추천해 줘."]),
]
SLOTS = {
    "c": ["서울", "부산", "인천", "대구", "수원", "경주", "속초", "세종"],
    "d": ["김치볶음밥", "계란말이", "불고기", "부대찌개", "감자전", "잡채밥", "닭갈비"],
    "p": ["리스트 정렬", "파일 읽기", "예외 처리", "딕셔너리 병합", "비동기 함수", "정규식 매칭"],
    "g": ["스릴러", "로맨스", "SF", "애니메이션", "다큐멘터리", "코미디"],
    "h": ["허리 통증", "수면 부족", "거북목", "스트레스", "소화 불량", "눈의 피로"],
    "t": ["퇴근하고", "주말에", "비 오는 날", "점심시간에", "새벽에", "휴가 때"],
}
REPLY_OPENERS = ["좋은 질문이에요.", "네, 알려드릴게요.", "음, 몇 가지 말씀드릴게요.", "물론이죠."]
REPLY_BODIES = [
    "{x}에 대해서는 먼저 기본부터 확인하는 게 좋아요. 상황에 따라 다르지만 보통은 천천히 "
    "하나씩 해 보시면 됩니다.",
    "{x} 관련해서 많이들 궁금해하세요. 가장 중요한 건 꾸준함이고, 무리하지 않는 선에서 "
    "계획을 세우시는 걸 추천드려요.",
    "{x}라면 세 가지를 기억하세요. 첫째, 준비를 충분히 하고요. 둘째, 시간을 넉넉히 잡고요. "
    "셋째, 중간에 한 번 점검해 보세요.",
    "제가 아는 범위에서 말씀드리면 {x}는 생각보다 어렵지 않아요. 필요하면 더 자세히 "
    "설명해 드릴게요.",
]
ACKS = ["오, 그렇군요! 기억해 둘게요.", "알려 주셔서 고마워요.", "좋네요. 말씀해 주셔서 감사해요."]


def _has_final(word: str) -> bool:
    """Whether the word's last syllable ends in a consonant (받침), which picks the particle."""
    last = word[-1]
    return "가" <= last <= "힣" and (ord(last) - ord("가")) % 28 != 0


def _fill(template: str, value: str, **extra: str) -> str:
    final = _has_final(value)
    # 으로 after ㄹ is 로 (서울로), which the modulo check alone would miss.
    rieul = final and (ord(value[-1]) - ord("가")) % 28 == 8
    particles = {
        "을": "을" if final else "를",
        "이야": "이야" if final else "야",
        "이래": "이래" if final else "래",
        "이라고": "이라고" if final else "라고",
        "으로": "으로" if final and not rieul else "로",
    }
    return template.format(v=value, **particles, **extra)


@dataclass
class Turn:
    """One user message and the assistant's reply; ``fact`` marks a planted fact."""

    user: str
    assistant: str
    fact: str | None = None  # the fact's kind, when this turn plants it


@dataclass
class Question:
    """A late question about a planted fact, asked after turn ``after_turn``."""

    text: str
    kind: str
    value: str
    planted_turn: int
    after_turn: int


@dataclass
class Conversation:
    """A generated conversation: turns, plus questions to ask at its end."""

    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def _filler(rng: random.Random) -> Turn:
    _, templates = rng.choice(TOPICS)
    text = rng.choice(templates).format(**{k: rng.choice(v) for k, v in SLOTS.items()})
    topic = text.split("?")[0].split(".")[0][:20]
    reply = rng.choice(REPLY_OPENERS) + " " + rng.choice(REPLY_BODIES).format(x=topic)
    return Turn(text, reply)


def generate_conversation(
    rng: random.Random, *, turns: int = 120, facts: int = 5, distractors: int = 4
) -> Conversation:
    """One conversation of ``turns`` turns, ``facts`` planted early, questions at the end."""
    kinds = rng.sample(FACT_KINDS, facts)
    # Facts go into the first half, so each question is asked 60+ turns after its fact.
    slots = sorted(rng.sample(range(1, turns // 2), facts + distractors))
    fact_slots = set(rng.sample(slots, facts))
    conv = Conversation()
    planted: list[tuple[int, str, str, list[str]]] = []
    kind_iter = iter(kinds)
    for index in range(turns):
        if index in fact_slots:
            kind, states, asks, _, values = next(kind_iter)
            value = rng.choice(values)
            conv.turns.append(Turn(_fill(rng.choice(states), value), rng.choice(ACKS), kind))
            planted.append((index, kind, value, asks))
        elif index in slots:
            _, _, _, others, values = rng.choice(FACT_KINDS)
            text = _fill(rng.choice(others), rng.choice(values), f=rng.choice(FRIENDS))
            conv.turns.append(Turn(text, rng.choice(ACKS)))
        else:
            conv.turns.append(_filler(rng))
    for index, kind, value, asks in planted:
        conv.questions.append(Question(rng.choice(asks), kind, value, index, turns))
    return conv


def generate(seed: int = 7, conversations: int = 20, turns: int = 120) -> list[Conversation]:
    """The benchmark's data set: ``conversations`` conversations from ``seed``."""
    rng = random.Random(seed)
    return [
        generate_conversation(rng, turns=turns + rng.randrange(0, 41)) for _ in range(conversations)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--turns", type=int, default=120)
    args = parser.parse_args()
    data = [asdict(c) for c in generate(args.seed, args.conversations, args.turns)]
    json.dump(data, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
