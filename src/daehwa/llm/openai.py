"""OpenAI-compatible chat completions: GLM-4.5 on Z.AI, OpenAI, vLLM, Ollama.

``POST {base_url}/chat/completions`` with ``stream: true``, read as SSE. The
``flavor`` (guessed from ``base_url``, or set in options) picks the few
places where servers differ: the token-limit field, how thinking is switched
on or off, and which per-request ids they accept.

Options (``[models.NAME.options]``), all optional:

- ``flavor``: ``openai`` | ``zai`` | ``vllm`` | ``ollama``;
- ``thinking``: true/false → Z.AI ``thinking: {type: enabled|disabled}``, vLLM/SGLang
  ``chat_template_kwargs: {enable_thinking}``;
- ``include_usage`` (default true): send ``stream_options.include_usage``;
- ``max_tokens_field``: ``max_tokens`` or ``max_completion_tokens``;
- ``headers``: extra request headers; ``extra_body``: extra JSON fields;
- the sampling and tool fields in :data:`PASSTHROUGH`, copied into the body as given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from daehwa.config import ModelSettings
from daehwa.errors import ConfigError, ProviderError
from daehwa.llm.base import (
    Chunk,
    GenerationParams,
    malformed_stream,
    relay_piece,
    truncated_stream,
)
from daehwa.llm.http import UpstreamClient
from daehwa.llm.openai_errors import error_from_response
from daehwa.llm.openai_stream import ChunkReader
from daehwa.llm.sse import SSEDecoder, SSEError
from daehwa.messages import Message, Role

Flavor = Literal["openai", "zai", "vllm", "ollama"]
FLAVORS: tuple[Flavor, ...] = ("openai", "zai", "vllm", "ollama")
# Request fields an operator may set in options, copied into the body as given.
PASSTHROUGH = frozenset(
    {
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "do_sample",
        "reasoning_effort",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "chat_template_kwargs",
        "service_tier",
        "user",
    }
)
_OWN_OPTIONS = frozenset(
    {"flavor", "thinking", "include_usage", "max_tokens_field", "headers", "extra_body"}
)
# Seconds to wait, after [DONE], for the end of the HTTP body so the connection is reused.
_DRAIN = 1.0


def guess_flavor(base_url: str) -> Flavor:
    """The server family a ``base_url`` points at; unknown hosts count as vLLM-like."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if host == "api.openai.com":
        return "openai"
    if host.endswith(("z.ai", "bigmodel.cn")):
        return "zai"
    if parts.port == 11434 or "ollama" in host:
        return "ollama"
    return "vllm"


class OpenAIModel:
    """A :class:`~daehwa.llm.base.ChatModel` for OpenAI-compatible servers.

    ``client`` is the shared pool for the upstream's origin; the model closes
    it in :meth:`aclose` only when ``owns_client`` is true.
    """

    def __init__(
        self,
        name: str,
        *,
        client: UpstreamClient,
        base_url: str,
        model: str,
        api_key: str | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
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
        unknown = sorted(set(opts) - _OWN_OPTIONS - PASSTHROUGH)
        if unknown:
            raise ConfigError(
                f"models.{name}.options: unknown option(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(_OWN_OPTIONS | PASSTHROUGH))} (or put them in extra_body)"
            )
        flavor = opts.get("flavor") or guess_flavor(base_url)
        if flavor not in FLAVORS:
            raise ConfigError(f"models.{name}.options.flavor must be one of {', '.join(FLAVORS)}")
        self.flavor: Flavor = flavor
        parts = urlsplit(base_url)
        self._path = parts.path.rstrip("/") + "/chat/completions"
        if parts.query:
            self._path += "?" + parts.query
        self._base = self._fixed_fields(opts)
        self._headers = self._request_headers(opts.get("headers") or {})

    @classmethod
    def from_settings(
        cls, name: str, config: ModelSettings, client: UpstreamClient, *, owns_client: bool = False
    ) -> OpenAIModel:
        """Build from a ``[models.NAME]`` section (the API key from ``api_key_env``)."""
        if not config.base_url:
            raise ConfigError(f"models.{name}.base_url is required for provider 'openai'")
        if not config.model:
            raise ConfigError(f"models.{name}.model is required (the upstream's model name)")
        return cls(
            name,
            client=client,
            base_url=config.base_url,
            model=config.model,
            api_key=config.api_key(),
            temperature=config.temperature,
            timeout=config.timeout,
            options=config.options,
            owns_client=owns_client,
        )

    def _fixed_fields(self, opts: dict[str, Any]) -> dict[str, Any]:
        """The body fields that are the same for every request of this model."""
        fields: dict[str, Any] = {"model": self.model, "stream": True}
        # Z.AI ignores stream_options; CLOVA's compat refuses it (include_usage = false).
        if opts.get("include_usage", True):
            fields["stream_options"] = {"include_usage": True}
        field = opts.get("max_tokens_field") or (
            "max_completion_tokens" if self.flavor == "openai" else "max_tokens"
        )
        if field not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError(
                f"models.{self.name}.options.max_tokens_field must be max_tokens or "
                "max_completion_tokens"
            )
        self._max_tokens_field = str(field)
        fields.update({k: v for k, v in opts.items() if k in PASSTHROUGH})
        thinking = opts.get("thinking")
        if thinking is not None:
            if not isinstance(thinking, bool):
                raise ConfigError(f"models.{self.name}.options.thinking must be true or false")
            if self.flavor == "zai":
                fields["thinking"] = {"type": "enabled" if thinking else "disabled"}
            elif self.flavor == "vllm":
                kwargs = dict(fields.get("chat_template_kwargs") or {})
                fields["chat_template_kwargs"] = {**kwargs, "enable_thinking": thinking}
            else:
                raise ConfigError(
                    f"models.{self.name}.options.thinking works with flavor zai or vllm; "
                    f"for {self.flavor} set reasoning_effort or extra_body instead"
                )
        extra = opts.get("extra_body") or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"models.{self.name}.options.extra_body must be a table")
        fields.update(extra)
        return fields

    def _request_headers(self, extra: Mapping[str, Any]) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        headers.update({str(k): str(v) for k, v in extra.items()})
        return headers

    def request_body(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        """The JSON body for one generation (public for tests and debugging)."""
        body = dict(self._base)
        body["messages"] = [wire_message(m) for m in messages]
        body[self._max_tokens_field] = params.max_new_tokens
        temperature = params.temperature if params.temperature is not None else self._temperature
        if temperature is not None:
            body["temperature"] = temperature
        if params.stop:
            body["stop"] = list(params.stop)
        if params.tools:
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
        if params.request_id and self.flavor == "zai":
            body["request_id"] = params.request_id
        if params.cache_key and self.flavor == "openai":
            body["prompt_cache_key"] = params.cache_key
        return body

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        """Stream the answer; closing the iterator closes the upstream response."""
        body = orjson.dumps(self.request_body(messages, params))
        try:
            response = await self._client.request(
                "POST", self._path, body=body, headers=self._headers, read_timeout=self._timeout
            )
        except ProviderError as exc:
            exc.provider = self.name
            raise
        try:
            if response.status != 200:
                raw = await response.read(64 * 1024)
                raise error_from_response(
                    self.name, response.status, raw, response.headers, api_key=self._api_key
                )
            reader = ChunkReader(self.name, api_key=self._api_key)
            decoder = SSEDecoder()
            done = False
            try:
                async for piece in response:
                    data = decoder.feed_data(piece)
                    if b"[DONE]" in data:
                        done = True
                        del data[data.index(b"[DONE]") :]
                    for chunk in relay_piece(reader.read_events(data), response.start_pacing):
                        yield chunk
                    if done:
                        break
            except SSEError as exc:
                raise malformed_stream(self.name, exc) from exc
            except ProviderError as exc:
                # A dropped connection after the finish loses nothing (Ollama may just close).
                if reader.finish_reason is None or exc.code != "upstream_disconnected":
                    exc.provider = self.name
                    raise
            if not done:
                for event in decoder.finish():
                    if event.data == "[DONE]":
                        done = True
                        break
                    last = reader.read(event.data)
                    if last is not None:
                        yield last
            if not done and reader.finish_reason is None:
                raise truncated_stream(self.name, "the answer did")
            # Reuse the connection: wait (briefly) for the body's end before the last yield.
            await response.aclose(drain=_DRAIN)
            yield reader.final_chunk()
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this model owns it."""
        if self._owns_client:
            await self._client.aclose()


def wire_message(message: Message) -> dict[str, Any]:
    """A :class:`Message` in the chat-completions request shape."""
    role = message.role
    if role is Role.TOOL:
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content,
        }
    out: dict[str, Any] = {"role": role.value, "content": message.content}
    if role is Role.ASSISTANT and message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    # The wire format wants the arguments as a JSON string.
                    "arguments": orjson.dumps(call.arguments).decode(),
                },
            }
            for call in message.tool_calls
        ]
    return out
