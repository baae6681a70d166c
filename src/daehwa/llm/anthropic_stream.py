"""Anthropic Messages streaming events and error bodies → chunks and our error tree.

Shared by the direct API (events as SSE) and Amazon Bedrock (the same events,
base64-wrapped in event-stream frames). One :class:`EventReader` per reply::

    message_start → (content_block_start → content_block_delta* → content_block_stop)*
    → message_delta (stop_reason, cumulative usage) → message_stop

``ping`` may come anywhere and ``error`` may follow a 200 (PROVIDERS.md §4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from daehwa.errors import ProviderError, RateLimited
from daehwa.llm.base import Chunk, malformed_stream
from daehwa.llm.http import retry_after_seconds
from daehwa.llm.openai_errors import scrub
from daehwa.messages import ToolCall, Usage

__all__ = ["STOP_REASONS", "EventReader", "error_from_body", "error_from_event"]

#: Anthropic ``stop_reason`` → our finish reasons (the OpenAI vocabulary).
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_CONTEXT_HINTS = ("prompt is too long", "input is too long", "too many tokens", "context window")


@dataclass(slots=True)
class _Block:
    kind: str
    id: str = ""
    name: str = ""
    json: list[str] = field(default_factory=list)
    start_input: Any = None


class EventReader:
    """Turns decoded events (dicts) into chunks; call :meth:`final_chunk` at the end."""

    __slots__ = ("_blocks", "_calls", "_input", "_output", "finished", "provider", "stop_reason")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._blocks: dict[int, _Block] = {}
        self._calls: list[tuple[int, ToolCall]] = []
        self._input: int | None = None
        self._output: int | None = None
        self.stop_reason: str | None = None
        #: True once ``message_stop`` has been read: the reply is whole.
        self.finished = False

    def read(self, event: Any) -> Chunk | None:
        """One event → a chunk with text or reasoning, or None (bookkeeping only)."""
        if not isinstance(event, dict):
            raise self._malformed("an event is not a JSON object")
        kind = event.get("type")
        try:
            if kind == "content_block_delta":
                return self._delta(event)
            if kind == "content_block_start":
                return self._start(event)
            if kind == "content_block_stop":
                self._stop(int(event["index"]))
            elif kind == "message_start":
                self._usage((event.get("message") or {}).get("usage"))
            elif kind == "message_delta":
                reason = (event.get("delta") or {}).get("stop_reason")
                if reason:
                    self.stop_reason = str(reason)
                self._usage(event.get("usage"))
            elif kind == "message_stop":
                self._close_open_blocks()
                self.finished = True
            elif kind == "error":
                raise error_from_event(self.provider, event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._malformed(f"unexpected {kind} event ({exc})") from exc
        return None  # ping, and event types added after this was written

    def final_chunk(self) -> Chunk:
        """The last chunk: complete tool calls (in block order), finish reason, usage."""
        self._close_open_blocks()
        calls = [call for _, call in sorted(self._calls, key=lambda pair: pair[0])]
        finish = STOP_REASONS.get(self.stop_reason or "", "tool_calls" if calls else "stop")
        usage = None
        if self._input is not None or self._output is not None:
            usage = Usage(self._input or 0, self._output or 0)
        return Chunk(tool_calls=calls, finish_reason=finish, usage=usage)

    def set_usage(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """Usage reported outside the events (Bedrock's invocation metrics) wins."""
        if prompt_tokens is not None:
            self._input = prompt_tokens
        if completion_tokens is not None:
            self._output = completion_tokens

    def _start(self, event: dict[str, Any]) -> Chunk | None:
        block = event["content_block"]
        kind = str(block.get("type", ""))
        self._blocks[int(event["index"])] = _Block(
            kind,
            id=str(block.get("id") or ""),
            name=str(block.get("name") or ""),
            start_input=block.get("input"),
        )
        # Blocks start empty in practice, but the format allows starting text.
        if kind == "text" and block.get("text"):
            return Chunk(text=str(block["text"]))
        return None

    def _delta(self, event: dict[str, Any]) -> Chunk | None:
        index = int(event["index"])
        delta = event["delta"]
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text") or ""
            return Chunk(text=text) if text else None
        if kind == "thinking_delta":
            thinking = delta.get("thinking") or ""
            return Chunk(reasoning=thinking) if thinking else None
        if kind == "input_json_delta":
            block = self._blocks.get(index)
            if block is None:
                # The SDK breaks on a delta for a block it never saw start; we keep it.
                block = self._blocks[index] = _Block("tool_use")
            block.json.append(str(delta.get("partial_json") or ""))
        return None  # signature_delta, citations_delta: not part of the reply text

    def _stop(self, index: int) -> None:
        block = self._blocks.pop(index, None)
        if block is not None and block.kind == "tool_use":
            self._calls.append((index, self._tool_call(index, block)))

    def _close_open_blocks(self) -> None:
        for index in list(self._blocks):
            self._stop(index)

    def _tool_call(self, index: int, block: _Block) -> ToolCall:
        if not block.name:
            raise self._malformed(f"tool_use block {index} has no name")
        text = "".join(block.json).strip()
        try:
            # The first partial_json is often "": no pieces means the start's input.
            arguments = orjson.loads(text) if text else (block.start_input or {})
        except orjson.JSONDecodeError as exc:
            raise ProviderError(
                f"{self.provider}: the input of tool call {block.name!r} is not valid JSON",
                code="invalid_tool_arguments",
                retryable=True,
                provider=self.provider,
            ) from exc
        if not isinstance(arguments, dict):
            arguments = {"value": arguments}
        return ToolCall(block.id or f"toolu_{index}", block.name, arguments)

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if usage.get("input_tokens") is not None:
            # Cached prompt tokens are prompt tokens too (reported apart from input_tokens).
            self._input = (
                int(usage["input_tokens"])
                + int(usage.get("cache_creation_input_tokens") or 0)
                + int(usage.get("cache_read_input_tokens") or 0)
            )
        if usage.get("output_tokens") is not None:
            self._output = int(usage["output_tokens"])  # cumulative: replace, never add

    def _malformed(self, detail: str) -> ProviderError:
        return malformed_stream(self.provider, detail)


def error_from_body(
    provider: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    api_key: str | None = None,
) -> ProviderError:
    """The error for a non-200 answer: ``{"type":"error","error":{type,message}}``."""
    try:
        payload: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = body.decode("utf-8", "replace").strip()
    kind, message = _fields(payload)
    text = scrub(f"{provider}: upstream answered {status}: {message or 'no details'}", api_key)
    error = classify(provider, text, kind, message, status, headers)
    should_retry = headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        error.retryable = should_retry == "true"
    return error


def error_from_event(provider: str, event: Mapping[str, Any]) -> ProviderError:
    """The error for an ``event: error`` after a 200 (typically ``overloaded_error``)."""
    kind, message = _fields(event)
    text = scrub(f"{provider}: upstream failed mid-stream: {message or kind or 'no details'}", None)
    return classify(provider, text, kind, message, None, {})


def classify(
    provider: str,
    text: str,
    kind: str,
    message: str,
    status: int | None,
    headers: Mapping[str, str],
) -> ProviderError:
    """Map an Anthropic error type and/or HTTP status to our tree (see docs/providers-native.md)."""

    def fail(code: str, retryable: bool) -> ProviderError:
        return ProviderError(
            text, code=code, retryable=retryable, upstream_status=status, provider=provider
        )

    if kind == "rate_limit_error" or status == 429:
        return RateLimited(
            text,
            retry_after=retry_after_seconds(headers),
            upstream_status=status,
            provider=provider,
        )
    if kind == "overloaded_error" or status == 529:
        return RateLimited(
            text,
            code="upstream_overloaded",
            retry_after=retry_after_seconds(headers),
            upstream_status=status,
            provider=provider,
        )
    lowered = message.lower()
    if status == 413 or kind == "request_too_large":
        return fail("request_too_large", False)
    if (status == 400 or kind == "invalid_request_error") and any(
        hint in lowered for hint in _CONTEXT_HINTS
    ):
        return fail("context_length_exceeded", False)
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        return fail("upstream_auth", False)
    if status == 404 or kind == "not_found_error":
        return fail("model_not_found", False)
    if status in (400, 422) or kind == "invalid_request_error":
        return fail("upstream_bad_request", False)
    if status is None or status in (408, 409) or status >= 500 or kind == "api_error":
        return fail("upstream_error", True)
    return fail("upstream_error", False)


def _fields(payload: Any) -> tuple[str, str]:
    """``(error type, message)`` from an Anthropic error object, as strings."""
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, dict):
            return str(inner.get("type") or ""), str(inner.get("message") or "")
        if isinstance(inner, str):
            return "", inner
    if isinstance(payload, str):
        return "", payload
    return "", ""
