"""Two real ``daehwa serve`` processes sharing PostgreSQL and Redis.

A reply started on one instance is resumed on the other with no gap; a stop
sent to the other instance stops it; a killed instance's half-written reply
becomes ``incomplete`` once its heartbeat is gone, and nothing acknowledged is
lost; an instance starting up leaves the replies others are streaming alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from daehwa.llm.sse import SSEDecoder

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

WORDS = " ".join(f"단어{i}" for i in range(80))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cluster_env(
    tmp_path: Path, empty_postgres_url: str, redis_url: str, redis_prefix: str
) -> Iterator[dict[str, str]]:
    config = tmp_path / "daehwa.toml"
    config.write_text(
        f"""
[server]
data_dir = "{tmp_path / "data"}"
bootstrap_user = ""
[store]
url = "{empty_postgres_url}"
[runs]
backend = "redis"
redis_url = "{redis_url}"
key_prefix = "{redis_prefix}-runs"
heartbeat_seconds = 1
sweep_seconds = 0.5
[models.slow]
provider = "scripted"
reply = "{WORDS}"
token_delay = 0.15
[models.scripted]
provider = "scripted"
reply = "{WORDS}"
token_delay = 0.05
[chat]
default_model = "scripted"
[context]
recall = false
""",
        encoding="utf-8",
    )
    env = {**os.environ, "DAEHWA_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    yield env


def daehwa(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daehwa", *args], env=env, capture_output=True, text=True, timeout=60
    )


class Instance:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(env["DAEHWA_CONFIG"]).parent / f"serve-{self.port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daehwa", "serve", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, http: aiohttp.ClientSession) -> None:
        for _ in range(300):
            if self.process.poll() is not None:
                raise AssertionError(self.log.read_text(errors="replace"))
            try:
                async with http.get(self.url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("instance did not start")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
async def cluster(
    cluster_env: dict[str, str],
) -> AsyncIterator[tuple[list[Instance], dict[str, str], aiohttp.ClientSession]]:
    added = daehwa("users", "add", "minji", env=cluster_env)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    instances = [Instance(cluster_env), Instance(cluster_env)]
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {key}"}) as http:
        try:
            for instance in instances:
                await instance.ready(http)
            yield instances, cluster_env, http
        finally:
            for instance in instances:
                instance.stop()


async def read_events(
    response: aiohttp.ClientResponse, until: int | None = None
) -> list[tuple[int, str, dict[str, Any]]]:
    events: list[tuple[int, str, dict[str, Any]]] = []
    decoder = SSEDecoder()
    async for data in response.content.iter_any():
        for event in decoder.feed(data):
            events.append((int(event.id or 0), event.event, orjson.loads(event.data)))
        if until is not None and sum(1 for e in events if e[1] == "delta") >= until:
            break
    return events


async def test_resume_on_the_other_instance_and_stop_across_instances(cluster: Any) -> None:
    (first, second), _, http = cluster
    async with http.post(first.url + "/v1/conversations", json={}) as response:
        cid = (await response.json())["id"]
    path = f"/v1/conversations/{cid}/messages"
    async with http.post(
        first.url + path, json={"content": "세어 줘"}, headers={"accept": "text/event-stream"}
    ) as response:
        seen = await read_events(response, until=5)
    message_id = next(d for _, kind, d in seen if kind == "meta")["message_id"]
    async with http.get(
        second.url + f"{path}/{message_id}/events", headers={"last-event-id": str(seen[-1][0])}
    ) as response:
        rest = await read_events(response)
    seqs = [seq for seq, _, _ in seen + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    text = "".join(d["text"] for _, kind, d in seen + rest if kind == "delta")
    assert text == WORDS
    assert rest[-1][1] == "done"

    async with http.post(
        first.url + path, json={"content": "또"}, headers={"accept": "text/event-stream"}
    ) as response:
        started = await read_events(response, until=2)
    reply_id = next(d for _, kind, d in started if kind == "meta")["message_id"]
    async with http.post(second.url + f"{path}/{reply_id}/stop") as response:
        assert response.status == 200
        stopped = await response.json()
    assert stopped["status"] == "stopped"
    assert 0 < len(stopped["content"]) < len(WORDS)


async def test_a_killed_instance_loses_nothing_acknowledged(cluster: Any) -> None:
    (first, _), env, http = cluster
    async with http.post(first.url + "/v1/conversations", json={}) as response:
        cid = (await response.json())["id"]
    path = f"/v1/conversations/{cid}/messages"
    async with http.post(
        first.url + path, json={"content": "죽기 전에"}, headers={"accept": "text/event-stream"}
    ) as response:
        await read_events(response, until=3)
        first.kill()
    restarted = Instance(env)
    try:
        await restarted.ready(http)
        # Within a few seconds of the heartbeat's expiry, some instance marks it.
        for _ in range(300):
            async with http.get(restarted.url + f"{path}?limit=10") as response:
                items = (await response.json())["items"]
            if items[-1]["status"] != "streaming":
                break
            await asyncio.sleep(0.1)
        assert [(m["role"], m["status"]) for m in items] == [
            ("user", "complete"),
            ("assistant", "incomplete"),
        ]
        assert items[0]["content"] == "죽기 전에"
        # The conversation goes on after the crash.
        async with http.post(restarted.url + path, json={"content": "다시"}) as response:
            assert (await response.json())["assistant_message"]["status"] == "complete"
    finally:
        restarted.stop()


async def test_a_starting_instance_leaves_live_replies_alone(cluster: Any) -> None:
    (first, second), env, http = cluster
    async with http.post(first.url + "/v1/conversations", json={"model": "slow"}) as response:
        cid = (await response.json())["id"]
    path = f"/v1/conversations/{cid}/messages"
    async with http.post(
        first.url + path, json={"content": "길게"}, headers={"accept": "text/event-stream"}
    ) as response:
        seen = await read_events(response, until=1)
    reply_id = next(d for _, kind, d in seen if kind == "meta")["message_id"]
    # Older than the grace period, so only its run's liveness protects it.
    await asyncio.sleep(6)
    newcomer = Instance(env)
    try:
        await newcomer.ready(http)
        await asyncio.sleep(1.5)  # several sweeps of every instance
        async with http.get(newcomer.url + f"{path}?limit=10") as response:
            assert (await response.json())["items"][-1]["status"] == "streaming"
        async with http.get(
            second.url + f"{path}/{reply_id}/events", headers={"last-event-id": str(seen[-1][0])}
        ) as response:
            rest = await read_events(response)
        assert rest[-1][1] == "done"
        async with http.get(newcomer.url + f"{path}?limit=10") as response:
            stored = (await response.json())["items"][-1]
        assert stored["id"] == reply_id
        assert (stored["status"], stored["content"]) == ("complete", WORDS)
    finally:
        newcomer.stop()
