"""A fake weather service for the sample tool, and the scripted "model" that calls it.

``GET /weather?city=서울`` → ``{"city", "condition", "temperature_c", "humidity",
"observed_at"}``; an unknown city → 404; ``?city=느림`` stalls (a tool timeout);
``?city=고장`` → 500.

:func:`weather_plan` is what the fake model upstreams do in their ``weather``
scenario: it calls the weather tool only when the conversation is about the
weather (some user message says 날씨) and the last user message names a city —
so "부산은?" leads to a tool call only if the earlier "서울 날씨 알려줘" reached
the model too. After a tool result it answers from that result.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http_server import FakeHTTPServer, RecordedRequest, Reply

WEATHER: dict[str, dict[str, Any]] = {
    "서울": {"condition": "맑음", "temperature_c": 23.5, "humidity": 40},
    "부산": {"condition": "흐림", "temperature_c": 21.0, "humidity": 65},
    "제주": {"condition": "비", "temperature_c": 19.5, "humidity": 90},
}
OBSERVED_AT = "2025-05-01T09:00:00+09:00"


class FakeWeatherService(FakeHTTPServer):
    """Serves ``GET /weather?city=…`` on loopback and counts lookups per city."""

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.lookups: list[str] = []

    async def handle(self, request: RecordedRequest, reply: Reply) -> None:
        parts = urlsplit(request.path)
        if request.method != "GET" or parts.path != "/weather":
            await reply.json(404, {"error": f"no route {parts.path}"})
            return
        city = (parse_qs(parts.query).get("city") or [""])[0]
        self.lookups.append(city)
        if city == "느림":
            await asyncio.sleep(3600)
        if city == "고장":
            await reply.json(500, {"error": "internal error"})
            return
        data = WEATHER.get(city)
        if data is None:
            await reply.json(404, {"error": f"unknown city {city}"})
            return
        await reply.json(200, {"city": city, **data, "observed_at": OBSERVED_AT})


def city_in(text: str) -> str | None:
    """The first known (or test-special) city named in ``text``."""
    for city in (*WEATHER, "느림", "고장", "평양"):
        if city in text:
            return city
    return None


def weather_plan(user_texts: list[str], tool_result: str | None) -> tuple[str, str]:
    """``("call", city)`` or ``("text", reply)`` for the fake model's next move."""
    if tool_result is not None:
        try:
            data = json.loads(tool_result)
        except json.JSONDecodeError:
            data = {}
        if isinstance(data, dict) and "error" in data:
            return "text", f"죄송합니다, 날씨를 확인하지 못했습니다: {data['error']}"
        if isinstance(data, dict) and "city" in data:
            return "text", (
                f"{data['city']}의 현재 날씨는 {data.get('condition')}, "
                f"기온 {data.get('temperature_c')}도입니다."
            )
        return "text", "도구 결과를 이해하지 못했습니다."
    last = user_texts[-1] if user_texts else ""
    city = city_in(last)
    about_weather = any("날씨" in text for text in user_texts)
    if city is not None and about_weather:
        return "call", city
    return "text", "무엇을 도와드릴까요?"
