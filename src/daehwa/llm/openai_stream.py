"""Chat-completion chunks (OpenAI, Z.AI, Ollama, vLLM, CLOVA's compat) → :class:`Chunk`.

One :class:`ChunkReader` per response. It turns each decoded ``data:`` JSON
object into text/reasoning chunks right away, joins tool-call pieces by
``index`` (or takes whole calls), remembers the finish reason and the usage
(which may come with the finish, in a ``choices: []`` chunk, or repeatedly),
and builds the one final chunk once the stream has ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from daehwa.errors import ProviderError
from daehwa.llm.base import Chunk, joined_chunks, malformed_stream
from daehwa.llm.openai_errors import error_from_stream
from daehwa.messages import ToolCall, Usage

# Where servers put the model's thinking: Z.AI and older vLLM, vLLM and Ollama, CLOVA.
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking_content")


# What read_events holds for a payload that is not JSON.
_NOT_JSON = object()


@dataclass(slots=True)
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChunkReader:
    """Reads the chunks of one streamed chat completion."""

    __slots__ = ("_api_key", "_calls", "finish_reason", "provider", "usage")

    def __init__(self, provider: str, *, api_key: str | None = None) -> None:
        self.provider = provider
        self._api_key = api_key
        self._calls: dict[int, _PendingCall] = {}
        #: The last finish reason seen (Z.AI repeats it).
        self.finish_reason: str | None = None
        #: The last usage seen (cumulative wherever servers repeat it).
        self.usage: Usage | None = None

    def read(self, data: str | bytes) -> Chunk | None:
        """One ``data:`` payload (not ``[DONE]``) → a chunk with text or reasoning, or None."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if isinstance(data, bytes):
                # Not UTF-8, perhaps: read it as the SSE decoder would, with U+FFFD.
                return self.read(data.decode("utf-8", "replace"))
            raise self._malformed("a chunk is not JSON") from exc
        return self._object(obj)

    def _object(self, obj: Any) -> Chunk | None:
        """:meth:`read` for a payload already decoded."""
        try:
            return self._read(obj)
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            # A chunk whose shape is not what the format says (e.g. a list for an object).
            raise self._malformed(f"unexpected chunk shape ({exc})") from exc

    def read_events(self, payloads: Sequence[bytes]) -> tuple[list[Chunk], Exception | None]:
        """The chunks of one network read's payloads, joined as :func:`~daehwa.llm.base.read_piece`
        joins them, and the error that stopped the reading, if any.

        The usual payload, a ``delta`` that holds only text, is taken here with
        no call and no :class:`Chunk` of its own: a paced read brings several,
        and their texts become one chunk. Any other payload is decoded once too,
        and read as :meth:`read` reads it.
        """
        pieces: list[Chunk] = []
        texts: list[str] = []
        loads = orjson.loads
        for payload in payloads:
            try:
                obj = loads(payload)
                choice = obj["choices"][0]
                delta = choice["delta"]
                text = delta["content"]
            except orjson.JSONDecodeError:
                obj, text = _NOT_JSON, None
            except (LookupError, TypeError):
                text = None
            # Each lookup above succeeded only on a dict, so these are _read's checks.
            if (
                type(text) is str
                and text
                and len(delta) == 1
                and "error" not in obj
                and not obj.get("usage")
                and obj.get("object") != "error"
                and not choice.get("finish_reason")
            ):
                texts.append(text)
                continue
            if texts:  # joined_chunks joins it with text that follows, if any
                pieces.append(Chunk("".join(texts)))
                texts = []
            try:
                # Not JSON as bytes: read() says why, or reads it decoded with U+FFFD.
                chunk = self.read(payload) if obj is _NOT_JSON else self._object(obj)
            except Exception as exc:
                return joined_chunks(pieces), exc
            if chunk is not None:
                pieces.append(chunk)
        if texts:
            pieces.append(Chunk("".join(texts)))
        return (joined_chunks(pieces) if len(pieces) > 1 else pieces), None

    def _read(self, obj: Any) -> Chunk | None:
        if not isinstance(obj, dict):
            raise self._malformed("a chunk is not a JSON object")
        if "error" in obj or obj.get("object") == "error":
            raise error_from_stream(self.provider, obj, api_key=self._api_key)
        usage = obj.get("usage")
        if usage:
            self.usage = _usage(usage)
        choices = obj.get("choices")
        if not choices:
            return None  # the usage chunk, or a keep-alive object
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        if len(delta) == 1 and type(text) is str and text and not choice.get("finish_reason"):
            return Chunk(text)  # the usual chunk: a piece of text and nothing else
        reasoning = ""
        for name in REASONING_FIELDS:
            value = delta.get(name)
            if value:
                reasoning = value
                break
        calls = delta.get("tool_calls")
        if calls:
            self._add_calls(calls)
        finish = choice.get("finish_reason")
        if finish:
            self._finish(finish)
        if (text or reasoning) and isinstance(text, str) and isinstance(reasoning, str):
            return Chunk(text=text, reasoning=reasoning)
        return None

    def final_chunk(self) -> Chunk:
        """The last chunk: complete tool calls, finish reason and usage."""
        calls = [self._tool_call(i, self._calls[i]) for i in sorted(self._calls)]
        finish = self.finish_reason or ("tool_calls" if calls else "stop")
        return Chunk(tool_calls=calls, finish_reason=finish, usage=self.usage)

    def _finish(self, reason: str) -> None:
        if reason == "sensitive":
            # GLM's safety system stopped the answer mid-way (PROVIDERS.md §2).
            raise ProviderError(
                f"{self.provider}: the upstream stopped the answer as sensitive content",
                code="content_filtered",
                retryable=False,
                provider=self.provider,
            )
        if reason == "network_error":
            raise ProviderError(
                f"{self.provider}: the upstream reported a network error mid-stream",
                code="upstream_error",
                retryable=True,
                provider=self.provider,
            )
        self.finish_reason = reason

    def _add_calls(self, deltas: Any) -> None:
        if not isinstance(deltas, list):
            raise self._malformed("tool_calls is not a list")
        for delta in deltas:
            index = delta.get("index")
            if not isinstance(index, int):
                # No index (some servers send whole calls): a new id starts a new call.
                index = len(self._calls) if delta.get("id") or not self._calls else max(self._calls)
            call = self._calls.get(index)
            if call is None:
                call = self._calls[index] = _PendingCall()
            if delta.get("id"):
                call.id = str(delta["id"])
            function = delta.get("function") or {}
            if function.get("name"):
                call.name = str(function["name"])
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call.arguments.append(arguments)
            elif isinstance(arguments, dict):
                call.arguments = [orjson.dumps(arguments).decode()]

    def _tool_call(self, index: int, call: _PendingCall) -> ToolCall:
        if not call.name:
            raise self._malformed(f"tool call {index} has no function name")
        text = "".join(call.arguments).strip()
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

    def _malformed(self, detail: str) -> ProviderError:
        return malformed_stream(self.provider, detail)


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))
