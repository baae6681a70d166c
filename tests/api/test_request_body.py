"""Reading a request's body: bounded, and readable again afterwards."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from daehwa.api.deps import read_body, read_json
from daehwa.config import load_settings
from daehwa.errors import TooLarge


def request(body: bytes, *, content_length: str | None = None, limit: int = 1024) -> Request:
    settings = load_settings(None, server={"max_body_bytes": limit})
    app = SimpleNamespace(state=SimpleNamespace(parts=SimpleNamespace(settings=settings)))
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)] or [b""]
    messages = [
        {"type": "http.request", "body": piece, "more_body": n < len(pieces) - 1}
        for n, piece in enumerate(pieces)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    headers = [] if content_length is None else [(b"content-length", content_length.encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "app": app}
    return Request({**scope, "headers": headers}, receive)


async def test_the_body_can_be_read_again_after_the_bounded_read() -> None:
    incoming = request(b'{"content": "' + b"a" * 500 + b'"}')
    assert (await read_json(incoming))["content"] == "a" * 500
    assert await incoming.body() == b'{"content": "' + b"a" * 500 + b'"}'


async def test_a_declared_or_streamed_body_over_the_limit_is_refused() -> None:
    with pytest.raises(TooLarge, match="2000 bytes"):
        await read_body(request(b"x" * 10, content_length="2000"))
    with pytest.raises(TooLarge, match="limit of 1024"):
        await read_body(request(b"x" * 1100))
    # A Content-Length that is not a plain number is not trusted: the body is counted.
    assert await read_body(request(b"x" * 10, content_length="²")) == b"x" * 10
    assert await read_body(request(b"x" * 1024)) == b"x" * 1024
