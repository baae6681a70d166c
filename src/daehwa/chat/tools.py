"""Tools the model may call: typed registration, JSON schemas, and safe execution.

Register a Python function with :func:`tool`; its JSON schema comes from the
type hints (``Annotated[str, Field(description=...)]`` for per-argument
descriptions), its description from the docstring unless given::

    @tool(name="get_weather")
    async def get_weather(city: Annotated[str, Field(description="도시 이름")]) -> dict:
        \"\"\"Current weather of a city.\"\"\"
        ...

    registry = ToolRegistry([get_weather])
    params = GenerationParams(tools=registry.specs(["get_weather"]))
    result = await registry.execute(call, timeout=10.0)   # never raises for tool failures
    history.append(result.to_message())

Arguments are validated (and coerced) by pydantic before the call; a bad
argument, an exception, a timeout or a result that is not JSON all come back
as a :class:`ToolResult` with ``ok=False`` and an ``error`` the model can read.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import orjson
import pydantic

from daehwa.errors import ConfigError, DaehwaError
from daehwa.llm.base import ToolSpec
from daehwa.messages import Message, Role, ToolCall

__all__ = ["DEFAULT_TIMEOUT", "Tool", "ToolError", "ToolRegistry", "ToolResult", "tool"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
#: Tool results longer than this (JSON characters) are cut before they reach the model.
MAX_RESULT_CHARS = 8000
# What OpenAI, Anthropic and CLOVA all accept as a function name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ToolFunction = Callable[..., Any]


class ToolError(DaehwaError):
    """Raised by a tool for a failure the model should read (e.g. "unknown city")."""

    code = "tool_error"


@dataclass(slots=True, frozen=True)
class Tool:
    """A registered tool: its public name, description, JSON schema and function."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: ToolFunction
    #: Per-tool upper bound in seconds; the smaller of this and the call's timeout wins.
    timeout: float | None = None
    #: Releases what the tool holds (an HTTP pool); called by ToolRegistry.aclose.
    close: Callable[[], Awaitable[None]] | None = None
    _validated: ToolFunction | None = field(default=None, repr=False, compare=False)

    def spec(self) -> ToolSpec:
        """What a provider sends to the model."""
        return ToolSpec(self.name, self.description, self.parameters)


@dataclass(slots=True, frozen=True)
class ToolResult:
    """The outcome of one tool call; ``value`` is JSON-serialisable when ``ok``."""

    call_id: str
    name: str
    ok: bool
    value: Any = None
    error: str | None = None
    #: Seconds the call took (for the ``step`` event and logs).
    elapsed: float = 0.0

    def content(self) -> str:
        """The JSON text the model reads: the value, or ``{"error": …}``."""
        payload = self.value if self.ok else {"error": self.error}
        text = orjson.dumps(payload).decode()
        if len(text) > MAX_RESULT_CHARS:
            text = orjson.dumps({"truncated": True, "text": text[:MAX_RESULT_CHARS]}).decode()
        return text

    def to_message(self, conversation_id: str = "") -> Message:
        """The ``tool`` message that feeds the result back (and is stored)."""
        return Message(
            role=Role.TOOL,
            content=self.content(),
            conversation_id=conversation_id,
            tool_call_id=self.call_id,
            metadata={"tool": self.name, "is_error": not self.ok},
        )

    def to_dict(self) -> dict[str, Any]:
        """A ``sources`` event item."""
        return {
            "call_id": self.call_id,
            "name": self.name,
            "ok": self.ok,
            "result": self.value if self.ok else None,
            "error": self.error,
        }


@overload
def tool(fn: ToolFunction, /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> Callable[[ToolFunction], Tool]: ...
def tool(
    fn: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> Tool | Callable[[ToolFunction], Tool]:
    """Make a :class:`Tool` of a function (sync functions run in a worker thread).

    ``name`` defaults to the function's name, ``description`` to its docstring,
    ``parameters`` to a schema derived from its type hints.
    """

    def wrap(function: ToolFunction) -> Tool:
        return make_tool(
            function, name=name, description=description, parameters=parameters, timeout=timeout
        )

    return wrap(fn) if fn is not None else wrap


def make_tool(
    fn: ToolFunction,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    timeout: float | None = None,
    close: Callable[[], Awaitable[None]] | None = None,
) -> Tool:
    """The function form of :func:`tool` (for tools built by a factory)."""
    tool_name = name or fn.__name__
    if not _NAME.match(tool_name):
        raise ConfigError(f"tool name {tool_name!r} must be 1-64 letters, digits, _ or -")
    text = description if description is not None else inspect.getdoc(fn) or ""
    if not text:
        raise ConfigError(f"tool {tool_name!r} needs a description (or a docstring)")
    try:
        validated = pydantic.validate_call(fn)
        schema = parameters if parameters is not None else schema_of(fn)
    except (pydantic.PydanticUserError, NameError) as exc:
        # NameError: a hint names a type defined inside a function (with postponed annotations).
        raise ConfigError(f"tool {tool_name!r}: cannot derive a schema: {exc}") from exc
    return Tool(tool_name, text.strip(), schema, fn, timeout, close, validated)


def schema_of(fn: ToolFunction) -> dict[str, Any]:
    """The JSON schema of ``fn``'s arguments, without pydantic's titles and null unions."""
    schema: dict[str, Any] = pydantic.TypeAdapter[Any](fn).json_schema()  # type: ignore[arg-type]
    tidy: dict[str, Any] = _tidy(schema)
    return tidy


def _tidy(node: Any) -> Any:
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _tidy(v) for k, v in node.items() if k != "title"}
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
        # An optional argument is simply not required: fewer tokens, and CLOVA-friendly.
        (inner,) = [s for s in any_of if s != {"type": "null"}]
        del out["anyOf"]
        out = {**inner, **out}
        if out.get("default", ...) is None:
            del out["default"]
    return out


class ToolRegistry:
    """The tools a server offers; personas and models pick theirs by name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.add(item)

    def add(self, item: Tool) -> Tool:
        """Register a tool; a second tool of the same name is a configuration error."""
        if item.name in self._tools:
            raise ConfigError(f"tool {item.name!r} is registered twice")
        self._tools[item.name] = item
        return item

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, if registered."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._tools)

    def specs(self, names: Iterable[str] | None = None) -> tuple[ToolSpec, ...]:
        """Specs for ``GenerationParams.tools``: the named tools (all when None).

        An unknown name raises :class:`ConfigError` (a persona naming a missing tool).
        """
        if names is None:
            return tuple(t.spec() for t in self._tools.values())
        chosen = list(dict.fromkeys(names))
        missing = [n for n in chosen if n not in self._tools]
        if missing:
            raise ConfigError(
                f"unknown tool(s) {', '.join(missing)}; registered: "
                f"{', '.join(self._tools) or 'none'}"
            )
        return tuple(self._tools[n].spec() for n in chosen)

    # The timeout bounds the tool, and a timed-out tool is a result, not an exception:
    # asyncio.timeout around the call would lose that.
    async def execute(
        self,
        call: ToolCall,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ) -> ToolResult:
        """Run one call within ``timeout`` seconds; failures come back as ``ok=False``.

        Cancelling the caller cancels the tool (a sync tool's thread runs on, unwatched).
        """
        started = time.perf_counter()
        item = self._tools.get(call.name)
        if item is None:
            return ToolResult(call.id, call.name, False, error=f"unknown tool {call.name!r}")
        limit = min(timeout, item.timeout) if item.timeout is not None else timeout
        try:
            async with asyncio.timeout(limit):
                value = await self._invoke(item, call.arguments)
            value = _jsonable(value)
        except TimeoutError:
            error = f"the tool {call.name!r} did not answer within {limit:g} s"
        except pydantic.ValidationError as exc:
            error = f"invalid arguments: {_brief(exc)}"
        except ToolError as exc:
            error = exc.message
        except Exception:
            log.exception("tool %s failed", call.name)
            error = f"the tool {call.name!r} failed"
        else:
            return ToolResult(
                call.id, call.name, True, value, elapsed=time.perf_counter() - started
            )
        return ToolResult(
            call.id, call.name, False, error=error, elapsed=time.perf_counter() - started
        )

    async def execute_all(
        self,
        calls: Sequence[ToolCall],
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ) -> list[ToolResult]:
        """Run parallel calls concurrently; results in the order of ``calls``."""
        return list(await asyncio.gather(*(self.execute(c, timeout=timeout) for c in calls)))

    async def aclose(self) -> None:
        """Release what the tools hold."""
        for item in self._tools.values():
            if item.close is not None:
                await item.close()

    @staticmethod
    async def _invoke(item: Tool, arguments: dict[str, Any]) -> Any:
        fn = item._validated or item.fn
        if inspect.iscoroutinefunction(item.fn):
            return await fn(**arguments)
        result = await asyncio.to_thread(fn, **arguments)
        if inspect.isawaitable(result):
            return await result
        return result


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data; raises ToolError if it cannot be."""
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError as exc:
        raise ToolError(f"the tool returned a value that is not JSON ({exc})") from exc


def _brief(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
