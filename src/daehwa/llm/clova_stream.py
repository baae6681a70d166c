"""CLOVA Studio chat-completions events (v1 and v3) and status codes → chunks and errors.

Each streamed event is an ``id:``/``event:``/``data:`` triple (PROVIDERS.md §3):

- ``token``: one piece of the answer (v3 adds ``thinkingContent`` and ``toolCalls``
  pieces: first ``{id, type, function{name}}``, then ``{function{partialJson}}``);
- ``result``: the **whole** answer again, with the stop reason and usage — it ends
  the stream and is never appended (only text it has beyond what streamed is);
- ``error``: ``{"status": {code, message}}``; ``signal``: ``{"data": "[DONE]"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from daehwa.errors import ProviderError, ProviderTimeout, RateLimited
from daehwa.llm.base import Chunk, malformed_stream
from daehwa.llm.http import retry_after_seconds
from daehwa.llm.openai_errors import scrub
from daehwa.messages import ToolCall, Usage

__all__ = ["FINISH_REASONS", "ClovaReader", "clova_error", "error_from_body"]

#: v1 ``stopReason`` and v3 ``finishReason`` → our finish reasons.
FINISH_REASONS = {
    "end_token": "stop",
    "stop_before": "stop",
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
}


@dataclass(slots=True)
class _PendingCall:
    id: str
    name: str
    pieces: list[str] = field(default_factory=list)
    arguments: dict[str, Any] | None = None


class ClovaReader:
    """Reads the events of one streamed CLOVA reply (v1 or v3)."""

    __slots__ = (
        "_calls",
        "_result_calls",
        "_streamed",
        "finish_reason",
        "finished",
        "provider",
        "usage",
    )

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._streamed: list[str] = []
        self._calls: list[_PendingCall] = []
        self._result_calls: list[ToolCall] | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        #: True once ``result`` (or the ``[DONE]`` signal) has been read.
        self.finished = False

    def read(self, event: str, data: str) -> Chunk | None:
        """One SSE event (name and data) → a chunk with text or reasoning, or None."""
        if event not in ("token", "result", "error", "signal"):
            return None  # unnamed events and types added after this was written
        try:
            obj = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError as exc:
            raise self._malformed(f"a {event} event is not JSON") from exc
        if not isinstance(obj, dict):
            raise self._malformed(f"a {event} event is not a JSON object")
        try:
            if event == "token":
                return self._token(obj)
            if event == "result":
                return self.read_result(obj)
            if event == "error":
                status = obj.get("status") or {}
                raise clova_error(
                    self.provider, None, str(status.get("code") or ""), status.get("message"), {}
                )
        except (AttributeError, TypeError, ValueError) as exc:
            raise self._malformed(f"unexpected {event} event ({exc})") from exc
        if "[DONE]" in str(obj.get("data", "")):
            self.finished = True
        return None

    def read_result(self, result: dict[str, Any]) -> Chunk | None:
        """The final result (streamed, or the whole JSON answer) → only what did not stream."""
        self.finished = True
        message = result.get("message") or {}
        reason = result.get("finishReason") or result.get("stopReason")
        if reason:
            self.finish_reason = FINISH_REASONS.get(str(reason).lower(), str(reason).lower())
        self._set_usage(result)
        calls = message.get("toolCalls")
        if calls:
            self._result_calls = [self._whole_call(i, c) for i, c in enumerate(calls)]
        full = message.get("content") or ""
        streamed = "".join(self._streamed)
        if isinstance(full, str) and len(full) > len(streamed) and full.startswith(streamed):
            rest = full[len(streamed) :]
            self._streamed.append(rest)
            return Chunk(text=rest)
        return None

    def final_chunk(self) -> Chunk:
        """The last chunk: complete tool calls, finish reason and usage."""
        if self._result_calls is not None:
            calls = self._result_calls
        else:
            calls = [self._joined_call(i, c) for i, c in enumerate(self._calls)]
        finish = self.finish_reason or ("tool_calls" if calls else "stop")
        return Chunk(tool_calls=calls, finish_reason=finish, usage=self.usage)

    def _token(self, obj: dict[str, Any]) -> Chunk | None:
        message = obj.get("message") or {}
        calls = message.get("toolCalls")
        if calls:
            self._add_pieces(calls)
        if obj.get("usage"):
            self._set_usage(obj)
        text = message.get("content") or ""
        reasoning = message.get("thinkingContent") or ""
        if not (text or reasoning):
            return None
        if text:
            self._streamed.append(text)
        return Chunk(text=text, reasoning=reasoning)

    def _add_pieces(self, pieces: list[Any]) -> None:
        for piece in pieces:
            function = piece.get("function") or {}
            # A piece with an id starts a call; the pieces after it (no id, no index) extend it.
            if piece.get("id") or not self._calls:
                self._calls.append(_PendingCall(str(piece.get("id") or ""), ""))
            call = self._calls[-1]
            if function.get("name"):
                call.name = str(function["name"])
            if isinstance(function.get("arguments"), dict):
                call.arguments = function["arguments"]
            if function.get("partialJson"):
                call.pieces.append(str(function["partialJson"]))

    def _joined_call(self, index: int, call: _PendingCall) -> ToolCall:
        if not call.name:
            raise self._malformed(f"tool call {index} has no function name")
        arguments = call.arguments
        if arguments is None:
            text = "".join(call.pieces).strip()
            try:
                arguments = orjson.loads(text) if text else {}
            except orjson.JSONDecodeError as exc:
                raise ProviderError(
                    f"{self.provider}: the arguments of tool call {call.name!r} are not valid JSON",
                    code="invalid_tool_arguments",
                    retryable=True,
                    provider=self.provider,
                ) from exc
        if not isinstance(arguments, dict):
            arguments = {"value": arguments}
        return ToolCall(call.id or f"call_{index}", call.name, arguments)

    def _whole_call(self, index: int, data: dict[str, Any]) -> ToolCall:
        function = data.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):  # v3 sends an object; tolerate a JSON string
            call = _PendingCall(str(data.get("id") or ""), str(function.get("name") or ""))
            call.pieces.append(arguments)
            return self._joined_call(index, call)
        pending = _PendingCall(
            str(data.get("id") or ""), str(function.get("name") or ""), arguments=arguments or {}
        )
        return self._joined_call(index, pending)

    def _set_usage(self, obj: dict[str, Any]) -> None:
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage(
                int(usage.get("promptTokens") or 0), int(usage.get("completionTokens") or 0)
            )
        elif "inputLength" in obj or "outputLength" in obj:
            self.usage = Usage(int(obj.get("inputLength") or 0), int(obj.get("outputLength") or 0))

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
    """The error for a non-200 answer: ``{"status": {"code": "42901", "message": …}}``."""
    try:
        payload: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    code, message = "", body[:300].decode("utf-8", "replace").strip()
    if isinstance(payload, dict) and isinstance(payload.get("status"), dict):
        code = str(payload["status"].get("code") or "")
        message = str(payload["status"].get("message") or "")
    return clova_error(provider, status, code, message, headers, api_key=api_key)


def clova_error(
    provider: str,
    status: int | None,
    code: str,
    message: Any,
    headers: Mapping[str, str],
    *,
    api_key: str | None = None,
) -> ProviderError:
    """Map an HTTP status and/or CLOVA ``status.code`` to our tree.

    Retried: 42901 (rate), 42902 (overload), 5xx, 50000, 50400 (timeout).
    Not retried: 40001 (parameters), 40003 (context too long), 40080 (model),
    401xx (key), any other 4xx.
    """
    where = f"answered {status}" if status is not None else "failed mid-stream"
    detail = f"{code} {message}".strip() if message else code or "no details"
    text = scrub(f"{provider}: upstream {where}: {detail}", api_key)

    def fail(kind: str, retryable: bool) -> ProviderError:
        return ProviderError(
            text, code=kind, retryable=retryable, upstream_status=status, provider=provider
        )

    if code in ("42901", "42902") or status == 429:
        return RateLimited(
            text,
            code="upstream_overloaded" if code == "42902" else None,
            retry_after=retry_after_seconds(headers),
            upstream_status=status,
            provider=provider,
        )
    if code == "40003":
        return fail("context_length_exceeded", False)
    if code.startswith("401") or status in (401, 403):
        return fail("upstream_auth", False)
    if code == "40080" or status == 404:
        return fail("model_not_found", False)
    if code == "50400" or status == 504:
        timeout = ProviderTimeout(text, provider=provider)
        timeout.upstream_status = status
        return timeout
    if code.startswith("4") or (status is not None and 400 <= status < 500):
        return fail("upstream_bad_request", False)
    # 5xx, 50000, and an unclassified failure mid-stream: transient server trouble.
    return fail("upstream_error", True)
