"""Terminal chat against a daehwa server: streams deltas, resumes after a drop."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

import aiohttp
import orjson

from daehwa.llm.sse import SSEDecoder

EXIT_WORDS = frozenset({"exit", "quit", "/exit", "/quit"})
RESUME_ATTEMPTS = 5


class ChatClientError(Exception):
    """The server refused a request or could not be reached; the message says why."""


class TerminalChat:
    """A read–send–stream loop on standard input and output."""

    def __init__(
        self,
        url: str,
        key: str,
        conversation_id: str | None = None,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.conversation_id = conversation_id
        self.headers = {"authorization": f"Bearer {key}"}
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout

    def say(self, text: str, *, end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    async def run(self) -> int:
        """Chat until ``exit``/``quit``/EOF; returns the process exit code."""
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=120)
        async with aiohttp.ClientSession(headers=self.headers, timeout=timeout) as http:
            try:
                await self._open_conversation(http)
            except ChatClientError as exc:
                self.say(f"daehwa: {exc}")
                return 1
            self.say(f"대화 {self.conversation_id} — 'exit' 또는 'quit'으로 나갑니다.")
            while True:
                line = await asyncio.to_thread(self._prompt)
                if line is None or line.strip().lower() in EXIT_WORDS:
                    return 0
                if not line.strip():
                    continue
                try:
                    await self._turn(http, line)
                except ChatClientError as exc:
                    self.say(f"\ndaehwa: {exc}")

    def _prompt(self) -> str | None:
        self.out.write("\n> ")
        self.out.flush()
        line = self.stdin.readline()
        return line.rstrip("\n") if line else None

    async def _request(self, http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> Any:
        try:
            async with http.request(method, self.url + path, **kw) as response:
                body = await response.read()
                if response.status >= 400:
                    raise ChatClientError(_error_text(response.status, body))
                return orjson.loads(body) if body else None
        except aiohttp.ClientConnectionError as exc:
            raise ChatClientError(f"cannot reach the server at {self.url} ({exc})") from None

    async def _open_conversation(self, http: aiohttp.ClientSession) -> None:
        if self.conversation_id:
            await self._request(http, "GET", f"/v1/conversations/{self.conversation_id}")
            page = await self._request(
                http, "GET", f"/v1/conversations/{self.conversation_id}/messages?limit=10"
            )
            for message in page["items"]:
                who = "나" if message["role"] == "user" else "봇"
                self.say(f"{who}: {message['content']}")
            return
        created = await self._request(http, "POST", "/v1/conversations", json={"title": "terminal"})
        self.conversation_id = created["id"]

    async def _turn(self, http: aiohttp.ClientSession, content: str) -> None:
        path = f"/v1/conversations/{self.conversation_id}/messages"
        state = _StreamState()
        try:
            async with http.post(
                self.url + path,
                json={"content": content},
                headers={"accept": "text/event-stream"},
            ) as response:
                if response.status >= 400:
                    raise ChatClientError(_error_text(response.status, await response.read()))
                await self._read_events(response, state)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            if state.message_id is None:
                raise ChatClientError(f"cannot reach the server at {self.url} ({exc})") from None
        attempt = 0
        while not state.finished and state.message_id is not None and attempt < RESUME_ATTEMPTS:
            # The reply goes on without us: resume after the last event we saw.
            attempt += 1
            await asyncio.sleep(min(0.5 * attempt, 2.0))
            events = f"{path}/{state.message_id}/events?after={state.seq}"
            try:
                async with http.get(self.url + events) as response:
                    if response.status >= 400:
                        raise ChatClientError(_error_text(response.status, await response.read()))
                    await self._read_events(response, state)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError):
                continue
        if not state.finished:
            raise ChatClientError("the connection was lost and the reply could not be resumed")

    async def _read_events(self, response: aiohttp.ClientResponse, state: _StreamState) -> None:
        decoder = SSEDecoder()
        async for data in response.content.iter_any():
            for event in decoder.feed(data):
                self._show(event.event, orjson.loads(event.data), state)
                if event.id is not None:
                    state.seq = int(event.id)
                if state.finished:
                    return

    def _show(self, kind: str, data: dict[str, Any], state: _StreamState) -> None:
        if kind == "meta":
            state.message_id = data["message_id"]
            if state.seq == 0:
                self.say("봇: ", end="")
        elif kind == "delta":
            self.say(data["text"], end="")
        elif kind == "done":
            state.finished = True
            self.say("" if data.get("status") == "complete" else f"\n[{data.get('status')}]")
        elif kind == "error":
            state.finished = True
            self.say(f"\n[오류] {data.get('message', '')} ({data.get('code', '')})")


class _StreamState:
    __slots__ = ("finished", "message_id", "seq")

    def __init__(self) -> None:
        self.message_id: str | None = None
        self.seq = 0
        self.finished = False


def _error_text(status: int, body: bytes) -> str:
    try:
        error = orjson.loads(body)["error"]
        message = f"{error['message']} ({error['code']})"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = body.decode(errors="replace")[:200] or "no details"
    if status == 401:
        return f"the API key was refused: {message}"
    return f"the server answered {status}: {message}"
