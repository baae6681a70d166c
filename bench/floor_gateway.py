"""A yardstick, not a product: the cheapest relay we could write on uvicorn.

The same job as :mod:`bench.naive_gateway` (``POST /chat`` with
``{"session_id", "message"}``, ``data: {"content": ...}`` events, histories in
a dict) as a bare ASGI callable: daehwa's pooled upstream client and SSE
decoder, orjson, one ``send`` per token, nothing else: no auth, store, filter,
run log, resilience or framework. What it costs per token is close to the
floor for any relay on uvicorn in Python on the machine it runs on; the
benchmark puts daehwa between it and the naive gateway.

Its WebSocket (any path) accepts, then answers every text frame with
``{"type":"pong"}``: what an idle WebSocket costs uvicorn itself.

    NAIVE_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn bench.floor_gateway:app --port 8200
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from daehwa.llm.http import UpstreamClient, origin_of
from daehwa.llm.sse import SSEDecoder

UPSTREAM = os.environ.get("NAIVE_UPSTREAM", "http://127.0.0.1:9000/v1")
HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
_state: dict[str, Any] = {"histories": {}}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI application."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _state["client"] = UpstreamClient(UPSTREAM)
                await send({"type": "lifespan.startup.complete"})
            else:
                await _state["client"].aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _websocket(receive, send)
        return
    if scope["path"] != "/chat":
        # Anything else (a readiness probe) gets an empty 200.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = orjson.loads(body)
    history = _state["histories"].setdefault(request["session_id"], [])
    history.append({"role": "user", "content": request["message"]})
    payload = orjson.dumps({"model": "bench", "stream": True, "messages": history})
    path = UPSTREAM.removeprefix("{}://{}:{}".format(*origin_of(UPSTREAM))) + "/chat/completions"
    response = await _state["client"].request("POST", path, body=payload, headers=HEADERS)
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    decoder = SSEDecoder()
    answer: list[str] = []
    try:
        async for piece in response:
            for event in decoder.feed(piece):
                if event.data == "[DONE]":
                    continue
                chunk = orjson.loads(event.data)
                choices = chunk.get("choices")
                text = choices[0]["delta"].get("content") if choices else None
                if text:
                    answer.append(text)
                    frame = b"data: " + orjson.dumps({"content": text}) + b"\n\n"
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
    finally:
        await response.aclose()
    history.append({"role": "assistant", "content": "".join(answer)})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _websocket(receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": '{"type":"pong"}'})
