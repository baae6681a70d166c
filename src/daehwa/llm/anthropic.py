"""Anthropic Claude through the Messages API, streamed (``POST /v1/messages``).

Our own client on the shared pooled HTTP client rather than the official SDK:
the resilience wrapper owns retries, the SDK's per-event cost (httpx plus a
pydantic model per event) is several times ours, and its accumulator breaks
on deltas for blocks it never saw start. docs/providers-native.md has the
measurement. :mod:`daehwa.llm.bedrock` reuses the request and event code.

Options (``[models.NAME.options]``), all optional:

- ``top_k``, ``top_p``, ``tool_choice``, ``metadata``, ``service_tier``: copied as given;
- ``thinking_budget``: extended thinking with this many tokens (reasoning chunks);
- ``cache_system``: mark the system prompt as a cached prefix (prompt caching);
- ``beta``: a list of ``anthropic-beta`` flags; ``anthropic_version``;
- ``headers``: extra request headers; ``extra_body``: extra JSON fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from daehwa.config import ModelSettings
from daehwa.errors import ConfigError, ProviderError
from daehwa.llm.anthropic_stream import EventReader, error_from_body
from daehwa.llm.base import (
    Chunk,
    GenerationParams,
    malformed_stream,
    piece_chunks,
    truncated_stream,
)
from daehwa.llm.http import UpstreamClient
from daehwa.llm.sse import SSEDecoder, SSEError
from daehwa.messages import Message, Role

__all__ = ["DEFAULT_BASE_URL", "AnthropicModel", "check_options", "messages_body"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
PASSTHROUGH = frozenset({"top_k", "top_p", "tool_choice", "metadata", "service_tier"})
OWN_OPTIONS = frozenset(
    {"thinking_budget", "cache_system", "beta", "anthropic_version", "headers", "extra_body"}
)
# Seconds to wait, after message_stop, for the end of the HTTP body so the connection is reused.
_DRAIN = 1.0


def check_options(name: str, options: Mapping[str, Any], extra: frozenset[str]) -> None:
    """Refuse unknown option names, listing the known ones."""
    known = PASSTHROUGH | OWN_OPTIONS | extra
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"models.{name}.options: unknown option(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(known))} (or put them in extra_body)"
        )
    budget = options.get("thinking_budget")
    if budget is not None and (not isinstance(budget, int) or budget < 1024):
        raise ConfigError(f"models.{name}.options.thinking_budget must be an integer ≥ 1024")
    beta = options.get("beta")
    if beta is not None and not (isinstance(beta, list) and all(isinstance(b, str) for b in beta)):
        raise ConfigError(f"models.{name}.options.beta must be a list of strings")
    if not isinstance(options.get("extra_body") or {}, dict):
        raise ConfigError(f"models.{name}.options.extra_body must be a table")


def messages_body(
    messages: Sequence[Message],
    params: GenerationParams,
    *,
    temperature: float | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The Messages request body without ``model`` and ``stream`` (Bedrock has neither)."""
    system, wire = wire_messages(messages)
    body: dict[str, Any] = {"max_tokens": params.max_new_tokens, "messages": wire}
    if system:
        if options.get("cache_system"):
            body["system"] = [
                {"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}
            ]
        else:
            body["system"] = system
    budget = options.get("thinking_budget")
    # Thinking mid tool loop needs the earlier thinking blocks back, which we do not keep.
    if budget and not _in_tool_loop(messages):
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        body["max_tokens"] = params.max_new_tokens + budget  # the budget must fit below it
    elif (
        value := params.temperature if params.temperature is not None else temperature
    ) is not None:
        body["temperature"] = min(1.0, max(0.0, value))  # Claude accepts 0-1, we allow 0-2
    if params.stop:
        body["stop_sequences"] = list(params.stop)
    if params.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in params.tools
        ]
    body.update({k: v for k, v in options.items() if k in PASSTHROUGH})
    if not params.tools:
        body.pop("tool_choice", None)  # refused without tools
    body.update(options.get("extra_body") or {})
    return body


def _in_tool_loop(messages: Sequence[Message]) -> bool:
    """True when the last message is a tool result: the reply continues a tool call."""
    return bool(messages) and messages[-1].role is Role.TOOL


def wire_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """``(system text, messages)`` in the Messages shape.

    System messages join the top-level ``system``; consecutive messages of one
    role merge (tool results go in one user message, as the API requires); a
    tool call whose result is missing gets an error result, and a result whose
    call is missing becomes text, since the API refuses both.
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        role, blocks = _blocks(message)
        if role == "system":
            system.append(message.content)
            continue
        if not blocks:
            continue  # the API refuses empty text
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    while out and out[0]["role"] == "assistant":
        # The API wants the user first; a persona's opening line becomes context instead.
        opening = " ".join(b["text"] for b in out.pop(0)["content"] if b["type"] == "text")
        if opening:
            system.append(f"(You opened this conversation by saying: {opening})")
    _pair_tool_results(out)
    return "\n\n".join(s for s in system if s), out


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role is Role.SYSTEM:
        return "system", []
    if message.role is Role.TOOL:
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id or "",
            "content": message.content or "(no output)",
        }
        if message.metadata.get("is_error"):
            result["is_error"] = True
        return "user", [result]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    if message.role is Role.ASSISTANT:
        for call in message.tool_calls or ():
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            )
        return "assistant", blocks
    return "user", blocks


def _pair_tool_results(out: list[dict[str, Any]]) -> None:
    """Make every tool_use have its tool_result in the next message, and vice versa."""
    asked: set[str] = set()
    for i, message in enumerate(out):
        blocks = message["content"]
        if message["role"] == "assistant":
            asked = {b["id"] for b in blocks if b["type"] == "tool_use"}
            nxt = out[i + 1] if i + 1 < len(out) else None
            if not asked or nxt is None:
                continue  # the last message may ask: its results are what comes next
            answered = {b["tool_use_id"] for b in nxt["content"] if b["type"] == "tool_result"}
            missing = [
                {
                    "type": "tool_result",
                    "tool_use_id": cid,
                    "content": "(no result)",
                    "is_error": True,
                }
                for cid in sorted(asked - answered)
            ]
            nxt["content"][:0] = missing
            continue
        for j, block in enumerate(blocks):
            if block["type"] == "tool_result" and block["tool_use_id"] not in asked:
                blocks[j] = {"type": "text", "text": f"[tool result] {block['content']}"}
        # tool_result blocks must come before any text in the user message.
        blocks.sort(key=lambda b: b["type"] != "tool_result")
        asked = set()


class AnthropicModel:
    """A :class:`~daehwa.llm.base.ChatModel` for Claude through the Messages API."""

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
        owns_client: bool = False,
    ) -> None:
        self.name = name
        self.model = model
        self._client = client
        self._owns_client = owns_client
        self._api_key = api_key.strip() if api_key else None
        self._temperature = temperature
        self._timeout = timeout
        self._options = dict(options or {})
        check_options(name, self._options, frozenset())
        self._path = urlsplit(base_url).path.rstrip("/") + "/v1/messages"
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "anthropic-version": str(self._options.get("anthropic_version") or API_VERSION),
        }
        if self._api_key:
            headers["x-api-key"] = self._api_key
        if self._options.get("beta"):
            headers["anthropic-beta"] = ",".join(self._options["beta"])
        headers.update({str(k): str(v) for k, v in (self._options.get("headers") or {}).items()})
        self._headers = headers

    @classmethod
    def from_settings(
        cls, name: str, config: ModelSettings, client: UpstreamClient, *, owns_client: bool = False
    ) -> AnthropicModel:
        """Build from a ``[models.NAME]`` section (the key from ``api_key_env``)."""
        if not config.model:
            raise ConfigError(f"models.{name}.model is required (e.g. claude-sonnet-4-5)")
        return cls(
            name,
            client=client,
            model=config.model,
            api_key=config.api_key(),
            base_url=config.base_url or DEFAULT_BASE_URL,
            temperature=config.temperature,
            timeout=config.timeout,
            options=config.options,
            owns_client=owns_client,
        )

    def request_body(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        """The JSON body for one generation (public for tests and debugging)."""
        body = messages_body(messages, params, temperature=self._temperature, options=self._options)
        return {"model": self.model, **body, "stream": True}

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
                raise error_from_body(
                    self.name, response.status, raw, response.headers, api_key=self._api_key
                )
            reader = EventReader(self.name)
            decoder = SSEDecoder()
            try:
                async for piece in response:
                    for chunk in piece_chunks(
                        reader.read,
                        (orjson.loads(e.data) for e in decoder.feed(piece) if e.data),
                        response.start_pacing,
                    ):
                        yield chunk
                    if reader.finished:
                        break
                if not reader.finished:
                    for event in decoder.finish():
                        if not event.data:
                            continue
                        last = reader.read(orjson.loads(event.data))
                        if last is not None:
                            yield last
            except (SSEError, orjson.JSONDecodeError) as exc:
                raise malformed_stream(self.name, exc) from exc
            except ProviderError as exc:
                exc.provider = self.name
                raise
            if not reader.finished:
                raise truncated_stream(self.name, "message_stop")
            await response.aclose(drain=_DRAIN)
            yield reader.final_chunk()
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this model owns it."""
        if self._owns_client:
            await self._client.aclose()
