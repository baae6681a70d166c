"""A sample tool: the current weather of a city, from a configurable HTTP service.

The service answers ``GET {base_url}/weather?city=서울`` with
``{"city", "condition", "temperature_c", "humidity", "observed_at"}`` and 404
for a city it does not know (``tests/fakes/weather_service.py`` is one, on
loopback). Requests go through the same pooled HTTP client as the models.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import orjson
from pydantic import Field

from daehwa.chat.tools import Tool, ToolError, make_tool
from daehwa.errors import ProviderError
from daehwa.llm.http import UpstreamClient

__all__ = ["DESCRIPTION", "TOOL_NAME", "weather_tool"]

TOOL_NAME = "get_weather"
DESCRIPTION = (
    "도시의 현재 날씨(상태, 기온 °C, 습도 %)를 조회합니다. "
    "Look up the current weather of a city (condition, temperature in °C, humidity)."
)


def weather_tool(
    base_url: str,
    *,
    client: UpstreamClient | None = None,
    timeout: float = 5.0,
    name: str = TOOL_NAME,
) -> Tool:
    """The weather tool for the service at ``base_url``.

    ``client`` is a shared pool for that origin; without one the tool opens its
    own, which :meth:`ToolRegistry.aclose` closes.
    """
    own = client is None
    http = client or UpstreamClient(base_url, max_connections=20, read_timeout=timeout)
    prefix = urlsplit(base_url).path.rstrip("/")

    async def get_weather(
        city: Annotated[str, Field(description="도시 이름 (예: 서울, 부산)", min_length=1)],
    ) -> dict[str, Any]:
        path = f"{prefix}/weather?city={quote(city.strip(), safe='')}"
        try:
            async with await http.request(
                "GET", path, headers={"Accept": "application/json"}, read_timeout=timeout
            ) as response:
                body = await response.read(64 * 1024)
                status = response.status
        except ProviderError as exc:
            raise ToolError("날씨 서비스에 연결할 수 없습니다") from exc
        if status == 404:
            raise ToolError(f"'{city}'의 날씨 정보를 찾을 수 없습니다")
        if status != 200:
            raise ToolError(f"날씨 서비스 오류 (HTTP {status})")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ToolError("날씨 서비스가 JSON이 아닌 응답을 보냈습니다") from exc
        if not isinstance(data, dict):
            raise ToolError("날씨 서비스의 응답 형식이 올바르지 않습니다")
        return data

    return make_tool(
        get_weather,
        name=name,
        description=DESCRIPTION,
        timeout=timeout,
        close=http.aclose if own else None,
    )
