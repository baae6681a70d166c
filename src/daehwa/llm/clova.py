"""NAVER CLOVA Studio HyperCLOVA X through its native chat-completions API.

``POST {base_url}/v1/chat-completions/{model}`` (HCX-003, HCX-DASH-001) or
``/v3/chat-completions/{model}`` (HCX-005, HCX-DASH-002, HCX-007), streamed
as SSE by ``Accept: text/event-stream`` (PROVIDERS.md §3). Two key styles:
``Authorization: Bearer nv-…``, or the keys from before 2025 —
``X-NCP-CLOVASTUDIO-API-KEY`` + ``X-NCP-APIGW-API-KEY`` under a
``/testapp`` or ``/serviceapp`` path prefix.

Options (``[models.NAME.options]``), all optional:

- ``api_version``: ``v1`` | ``v3`` (default: v1 for HCX-003 and HCX-DASH-001, else v3);
- ``apigw_api_key_env``: the variable holding the legacy gateway key (selects the
  legacy key style); ``app``: the legacy path prefix, ``testapp`` (default) or ``serviceapp``;
- ``thinking``: v3 thinking effort ``none`` | ``low`` | ``medium`` | ``high`` (HCX-007);
- ``max_tokens_field``: ``maxTokens`` or ``maxCompletionTokens`` (default: the latter for
  HCX-007 and when thinking is on);
- sampling, copied under their wire names: ``top_k``, ``top_p``, ``seed``,
  ``include_ai_filters``, v1 ``repeat_penalty``, v3 ``repetition_penalty``,
  ``tool_choice``, ``response_format``;
- ``headers``: extra request headers; ``extra_body``: extra JSON fields.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import orjson

from daehwa.config import ModelSettings
from daehwa.errors import ConfigError, ProviderError
from daehwa.llm.base import (
    Chunk,
    GenerationParams,
    malformed_stream,
    piece_chunks,
    truncated_stream,
)
from daehwa.llm.clova_stream import ClovaReader, clova_error, error_from_body
from daehwa.llm.http import UpstreamClient
from daehwa.llm.sse import SSEDecoder, SSEError
from daehwa.messages import Message, Role

__all__ = ["DEFAULT_BASE_URL", "ClovaModel", "default_api_version"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://clovastudio.stream.ntruss.com"
ApiVersion = Literal["v1", "v3"]
# snake_case option → wire field, per API version.
_V1_FIELDS = {
    "top_k": "topK",
    "top_p": "topP",
    "repeat_penalty": "repeatPenalty",
    "include_ai_filters": "includeAiFilters",
    "seed": "seed",
}
_V3_FIELDS = {
    "top_k": "topK",
    "top_p": "topP",
    "repetition_penalty": "repetitionPenalty",
    "include_ai_filters": "includeAiFilters",
    "seed": "seed",
    "tool_choice": "toolChoice",
    "response_format": "responseFormat",
}
_OWN = frozenset(
    {
        "api_version",
        "apigw_api_key_env",
        "app",
        "thinking",
        "max_tokens_field",
        "headers",
        "extra_body",
    }
)
_EFFORTS = ("none", "low", "medium", "high")
# Function calling refuses a smaller token limit (CLOVA docs, chatcompletionsv3-fc).
_MIN_TOKENS_WITH_TOOLS = 1024
_DRAIN = 1.0


def default_api_version(model: str) -> ApiVersion:
    """v1 for the models only v1 serves (HCX-003, HCX-DASH-001), else v3."""
    upper = model.upper()
    return "v1" if upper.startswith(("HCX-003", "HCX-DASH-001")) else "v3"


class ClovaModel:
    """A :class:`~daehwa.llm.base.ChatModel` for CLOVA Studio's native API."""

    def __init__(
        self,
        name: str,
        *,
        client: UpstreamClient,
        model: str,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        temperature: float | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
        apigw_api_key: str | None = None,
        owns_client: bool = False,
    ) -> None:
        self.name = name
        self.model = model
        self._client = client
        self._owns_client = owns_client
        self._api_key = api_key.strip() if api_key else None
        self._temperature = temperature
        self._timeout = timeout
        opts = dict(options or {})
        version = opts.get("api_version") or default_api_version(model)
        if version not in ("v1", "v3"):
            raise ConfigError(f"models.{name}.options.api_version must be v1 or v3")
        self.api_version: ApiVersion = version
        fields = _V1_FIELDS if version == "v1" else _V3_FIELDS
        wire_names = set(fields.values())
        unknown = sorted(set(opts) - _OWN - set(fields) - wire_names)
        if unknown:
            raise ConfigError(
                f"models.{name}.options: unknown option(s) {', '.join(unknown)} for CLOVA "
                f"{version}; known: {', '.join(sorted(_OWN | set(fields)))}"
            )
        self._fixed = {
            fields.get(k, k): v for k, v in opts.items() if k in fields or k in wire_names
        }
        extra = opts.get("extra_body") or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"models.{name}.options.extra_body must be a table")
        self._fixed.update(extra)
        self._thinking = self._thinking_effort(opts.get("thinking"))
        default_field = (
            "maxCompletionTokens"
            if version == "v3" and (model.upper().startswith("HCX-007") or self._thinking)
            else "maxTokens"
        )
        self._max_field = str(opts.get("max_tokens_field") or default_field)
        if self._max_field not in ("maxTokens", "maxCompletionTokens"):
            raise ConfigError(
                f"models.{name}.options.max_tokens_field must be maxTokens or maxCompletionTokens"
            )
        legacy = apigw_api_key is not None or bool(opts.get("apigw_api_key_env"))
        app = opts.get("app", "testapp" if legacy else "")
        if app not in ("", "testapp", "serviceapp"):
            raise ConfigError(f"models.{name}.options.app must be testapp or serviceapp")
        prefix = urlsplit(base_url).path.rstrip("/") + (f"/{app}" if app else "")
        self._path = f"{prefix}/{version}/chat-completions/{quote(model, safe='')}"
        self._headers = self._auth_headers(opts, legacy, apigw_api_key)

    @classmethod
    def from_settings(
        cls, name: str, config: ModelSettings, client: UpstreamClient, *, owns_client: bool = False
    ) -> ClovaModel:
        """Build from a ``[models.NAME]`` section (keys from ``api_key_env`` and options)."""
        if not config.model:
            raise ConfigError(f"models.{name}.model is required (e.g. HCX-005)")
        apigw_env = config.options.get("apigw_api_key_env")
        apigw = os.environ.get(str(apigw_env)) if apigw_env else None
        if apigw_env and not apigw:
            raise ConfigError(
                f"models.{name}.options.apigw_api_key_env names {apigw_env}, which is not set"
            )
        return cls(
            name,
            client=client,
            model=config.model,
            api_key=config.api_key(),
            base_url=config.base_url or DEFAULT_BASE_URL,
            temperature=config.temperature,
            timeout=config.timeout,
            options=config.options,
            apigw_api_key=apigw,
            owns_client=owns_client,
        )

    def _thinking_effort(self, value: Any) -> str | None:
        if value is None:
            return None
        if self.api_version != "v3" or value not in _EFFORTS:
            raise ConfigError(
                f"models.{self.name}.options.thinking must be one of {', '.join(_EFFORTS)} "
                "(v3 models only)"
            )
        return None if value == "none" else str(value)

    def _auth_headers(
        self, opts: Mapping[str, Any], legacy: bool, apigw_api_key: str | None
    ) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if legacy:
            if self._api_key:
                headers["X-NCP-CLOVASTUDIO-API-KEY"] = self._api_key
            if apigw_api_key:
                headers["X-NCP-APIGW-API-KEY"] = apigw_api_key.strip()
        elif self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        headers.update({str(k): str(v) for k, v in (opts.get("headers") or {}).items()})
        return headers

    def request_body(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        """The JSON body for one generation (public for tests and debugging)."""
        v3 = self.api_version == "v3"
        wire = [_v3_message(m) for m in messages] if v3 else _v1_messages(messages)
        body: dict[str, Any] = {"messages": wire}
        limit = params.max_new_tokens
        if v3 and params.tools:
            limit = max(limit, _MIN_TOKENS_WITH_TOOLS)
        body[self._max_field] = limit
        temperature = params.temperature if params.temperature is not None else self._temperature
        if temperature is not None:
            # v1 accepts (0, 1], v3 [0, 1]; our settings allow 0-2.
            body["temperature"] = min(1.0, max(0.01 if not v3 else 0.0, temperature))
        if params.stop and not self._thinking:  # v3 refuses stop with thinking
            body["stop" if v3 else "stopBefore"] = list(params.stop)
        if self._thinking:
            body["thinking"] = {"effort": self._thinking}
        if params.tools:
            if v3:
                body["tools"] = [
                    {
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        },
                    }
                    for t in params.tools
                ]
            else:
                log.debug("%s: CLOVA v1 has no tool calling; tools are not sent", self.name)
        body.update(self._fixed)
        if not (v3 and params.tools):
            body.pop("toolChoice", None)
        return body

    def _request_headers(self, params: GenerationParams) -> Mapping[str, str]:
        if not params.request_id:
            return self._headers
        return {**self._headers, "X-NCP-CLOVASTUDIO-REQUEST-ID": params.request_id}

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        """Stream the answer; closing the iterator closes the upstream response."""
        body = orjson.dumps(self.request_body(messages, params))
        headers = self._request_headers(params)
        try:
            response = await self._client.request(
                "POST", self._path, body=body, headers=headers, read_timeout=self._timeout
            )
        except ProviderError as exc:
            exc.provider = self.name
            raise
        try:
            if response.status != 200:
                raw = await response.read(64 * 1024)
                raise error_from_body(
                    self.name, response.status, raw, response.headers, api_key=self._api_key
                )
            reader = ClovaReader(self.name)
            try:
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    # A whole JSON answer: an endpoint (or proxy) that does not stream.
                    chunk = self._read_json(reader, await response.read(16 * 1024 * 1024))
                    if chunk is not None:
                        yield chunk
                else:
                    decoder = SSEDecoder()
                    async for piece in response:
                        for chunk in piece_chunks(
                            lambda e: reader.read(e.event, e.data),
                            decoder.feed(piece),
                            response.start_pacing,
                        ):
                            yield chunk
                        if reader.finished:
                            break
                    if not reader.finished:
                        for event in decoder.finish():
                            chunk = reader.read(event.event, event.data)
                            if chunk is not None:
                                yield chunk
            except SSEError as exc:
                raise malformed_stream(self.name, exc) from exc
            except ProviderError as exc:
                exc.provider = self.name
                raise
            if not reader.finished:
                raise truncated_stream(self.name, "its result event")
            await response.aclose(drain=_DRAIN)
            yield reader.final_chunk()
        finally:
            await response.aclose()

    def _read_json(self, reader: ClovaReader, raw: bytes) -> Chunk | None:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProviderError(
                f"{self.name}: the upstream answered neither SSE nor JSON",
                code="upstream_protocol_error",
                retryable=True,
                provider=self.name,
            ) from exc
        if not isinstance(payload, dict):
            payload = {}
        status = payload.get("status") or {}
        code = str(status.get("code") or "")
        if code and code != "20000":
            raise clova_error(self.name, 200, code, status.get("message"), {})
        result = payload.get("result")
        if not isinstance(result, dict):
            raise ProviderError(
                f"{self.name}: the JSON answer has no result",
                code="upstream_protocol_error",
                retryable=True,
                provider=self.name,
            )
        return reader.read_result(result)

    async def aclose(self) -> None:
        """Close the HTTP client if this model owns it."""
        if self._owns_client:
            await self._client.aclose()


def _v3_message(message: Message) -> dict[str, Any]:
    """A message in the v3 shape: tool calls with object arguments, ``toolCallId``."""
    if message.role is Role.TOOL:
        return {
            "role": "tool",
            "toolCallId": message.tool_call_id or "",
            "content": message.content,
        }
    out: dict[str, Any] = {"role": message.role.value, "content": message.content}
    if message.role is Role.ASSISTANT and message.tool_calls:
        out["toolCalls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    return out


def _v1_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """v1 knows system, user and assistant only: tool calls and results become assistant text."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.role.value
        content = message.content
        if message.role is Role.TOOL:
            role, content = "assistant", f"[tool result] {message.content}"
        elif message.tool_calls:
            calls = "\n".join(
                f"[tool call] {c.name} {orjson.dumps(c.arguments).decode()}"
                for c in message.tool_calls
            )
            content = f"{content}\n{calls}" if content else calls
        if not content:
            continue
        if out and out[-1]["role"] == role == "assistant":
            out[-1]["content"] += "\n" + content
        else:
            out.append({"role": role, "content": content})
    return out
