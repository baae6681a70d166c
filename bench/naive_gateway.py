"""The naive baseline: a chat gateway written the way a typical tutorial writes one.

FastAPI, ``StreamingResponse``, one shared ``httpx.AsyncClient`` with its
default limits, the stdlib ``json`` module, and conversation histories in a
dict. It is deliberately *not* daehwa's code and not optimised: it is what
the benchmark compares daehwa against (``bench/streaming.py``). It has no
auth, no store, no content filter and no run log, so it does less work per
reply than daehwa does.

Run it with uvicorn (the same server daehwa uses)::

    NAIVE_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn bench.naive_gateway:app --port 8100

``POST /chat`` with ``{"session_id": "...", "message": "..."}`` streams
``data: {"content": "..."}`` events, then ``data: [DONE]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

UPSTREAM = os.environ.get("NAIVE_UPSTREAM", "http://127.0.0.1:9000/v1")
MODEL = os.environ.get("NAIVE_MODEL", "bench")

app = FastAPI()
client = httpx.AsyncClient(timeout=60.0)
histories: dict[str, list[dict[str, str]]] = {}


class ChatRequest(BaseModel):
    """One user message in one session."""

    session_id: str
    message: str


@app.post("/chat")
async def chat(request: ChatRequest) -> StreamingResponse:
    """Stream the model's answer to ``message``, remembering the session's history."""
    history = histories.setdefault(request.session_id, [])
    history.append({"role": "user", "content": request.message})

    async def generate() -> AsyncIterator[str]:
        answer = ""
        payload = {"model": MODEL, "messages": history, "stream": True}
        async with client.stream("POST", f"{UPSTREAM}/chat/completions", json=payload) as resp:
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if not chunk.get("choices"):
                    continue
                content = chunk["choices"][0]["delta"].get("content")
                if content:
                    answer += content
                    yield f"data: {json.dumps({'content': content})}\n\n"
        history.append({"role": "assistant", "content": answer})
        yield "data: [DONE]\n\n"

    return StreamingResponse(generate(), media_type="text/event-stream")
