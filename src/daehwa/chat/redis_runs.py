"""Run event logs in Redis Streams, so any instance can resume any reply.

Keys (every one expires):

* ``{prefix}:run:{id}`` — the stream of events; entry id ``0-<seq>``, fields
  ``t`` (type) and ``d`` (JSON data). It expires ``ttl`` seconds after the run
  finishes, and at the latest ``RUNNING_TTL`` after it started.
* ``{prefix}:run:{id}:state`` — ``running`` or ``finished``, same lifetimes.
* ``{prefix}:run:{id}:owner`` — the id of the instance generating the run.
* ``{prefix}:instance:{id}`` — an instance's heartbeat, refreshed every third of
  ``heartbeat`` seconds and expiring after ``heartbeat``: a run whose owner has no
  heartbeat is dead (its instance crashed), whatever its state says.

Stop requests travel on the channel ``{prefix}:run-stop``: the instance running
the reply stops it, wherever the request arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from daehwa.chat.runs import one_by_one, until_terminal
from daehwa.errors import NotFound, StoreError
from daehwa.events import Envelope

log = logging.getLogger(__name__)

# The longest a reply may run before its log expires anyway (a crashed instance's logs too).
RUNNING_TTL = 3600
BLOCK_MS = 5000


class RedisRunLog:
    """A :class:`~daehwa.chat.runs.RunLog` shared by every instance through Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "daehwa",
        ttl: float = 600.0,
        heartbeat: float = 30.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = max(1, int(ttl))
        self.heartbeat = max(0.1, heartbeat)
        self.instance_id = uuid.uuid4().hex
        self._stop_handlers: list[Callable[[str], object]] = []
        self._listener: asyncio.Task[None] | None = None
        self._beating: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, url: str, *, prefix: str = "daehwa", ttl: float = 600.0, heartbeat: float = 30.0
    ) -> RedisRunLog:
        client = aioredis.Redis.from_url(url, max_connections=2000)
        run_log = cls(client, prefix=prefix, ttl=ttl, heartbeat=heartbeat)
        try:
            await client.ping()
            await run_log.beat()
        except RedisError as exc:
            await client.aclose()
            raise StoreError(f"cannot reach Redis for [runs] at {url}: {exc}") from exc
        run_log._beating = asyncio.create_task(run_log._beat_forever())
        return run_log

    def _instance_key(self, instance_id: str) -> str:
        return f"{self.prefix}:instance:{instance_id}"

    async def beat(self) -> None:
        """Tell the other instances that this one is alive, for ``heartbeat`` seconds."""
        await self.client.set(
            self._instance_key(self.instance_id), "1", px=max(1, int(self.heartbeat * 1000))
        )

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat / 3)
            try:
                await self.beat()
            except RedisError as exc:
                log.warning("could not refresh this instance's heartbeat in Redis: %s", exc)

    def _key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    @property
    def stop_channel(self) -> str:
        return f"{self.prefix}:run-stop"

    async def open(self, run_id: str) -> None:
        key = self._key(run_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(key + ":owner", self.instance_id, ex=RUNNING_TTL)
            pipe.set(key + ":state", "running", ex=RUNNING_TTL)
            await pipe.execute()

    async def append(self, run_id: str, envelope: Envelope) -> None:
        key = self._key(run_id)
        fields: dict[Any, Any] = {"t": envelope.type, "d": orjson.dumps(envelope.data)}
        if envelope.seq == 1:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, fields, id=f"0-{envelope.seq}")
                pipe.expire(key, RUNNING_TTL)
                await pipe.execute()
        else:
            await self.client.xadd(key, fields, id=f"0-{envelope.seq}")

    def follow(self, run_id: str, after: int = 0) -> AsyncIterator[Envelope]:
        return one_by_one(self.follow_batches(run_id, after))

    async def follow_batches(self, run_id: str, after: int = 0) -> AsyncIterator[list[Envelope]]:
        key = self._key(run_id)
        last = max(after, 0)
        entries: Any = await self.client.xrange(key, min=f"(0-{last}" if last else "-", max="+")
        if not entries and not await self.exists(run_id):
            raise NotFound(f"no event log for message {run_id}")
        while True:
            if entries:
                ready = until_terminal([_envelope(i, fields) for i, fields in entries])
                last = ready[-1].seq
                yield ready
                if ready[-1].terminal:
                    return
            if await self.client.get(key + ":state") != b"running":
                # Finished (or gone): whatever is left is all there will be.
                entries = await self.client.xrange(key, min=f"(0-{last}", max="+")
                if not entries:
                    return
                continue
            response: Any = await self.client.xread({key: f"0-{last}"}, block=BLOCK_MS, count=500)
            entries = response[0][1] if response else []

    async def finish(self, run_id: str) -> None:
        key = self._key(run_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.expire(key, self.ttl)
            pipe.set(key + ":state", "finished", ex=self.ttl)
            await pipe.execute()

    async def exists(self, run_id: str) -> bool:
        return bool(await self.client.exists(self._key(run_id) + ":state", self._key(run_id)))

    async def alive(self, run_ids: Collection[str]) -> set[str]:
        """Runs still ``running`` whose owning instance still has its heartbeat."""
        ids = list(run_ids)
        if not ids:
            return set()
        keys = [self._key(run_id) for run_id in ids]
        values: list[Any] = await self.client.mget(
            [k + ":state" for k in keys] + [k + ":owner" for k in keys]
        )
        states, owned_by = values[: len(ids)], values[len(ids) :]
        running = {
            run_id: owner.decode()
            for run_id, state, owner in zip(ids, states, owned_by, strict=True)
            if state == b"running" and owner is not None
        }
        owners = sorted(set(running.values()) - {self.instance_id})
        beating = {self.instance_id}
        if owners:
            found: list[Any] = await self.client.mget([self._instance_key(o) for o in owners])
            beating.update(o for o, value in zip(owners, found, strict=True) if value is not None)
        return {run_id for run_id, owner in running.items() if owner in beating}

    async def request_stop(self, run_id: str) -> None:
        """Ask whichever instance runs ``run_id`` to stop it."""
        await self.client.publish(self.stop_channel, run_id)

    def on_stop_request(self, handler: Callable[[str], object]) -> None:
        """Call ``handler(run_id)`` for every stop request (from any instance)."""
        self._stop_handlers.append(handler)
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(self.stop_channel)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        run_id = message["data"].decode()
                        for handler in self._stop_handlers:
                            handler(run_id)
            except RedisError as exc:
                log.warning("stop-request listener lost Redis (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        for task in (self._listener, self._beating):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(RedisError, TimeoutError):
            # A clean shutdown: the others need not wait for the heartbeat to expire.
            async with asyncio.timeout(2):
                await self.client.delete(self._instance_key(self.instance_id))
        await self.client.aclose()


def _entry_seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-")[1])


def _envelope(entry_id: bytes | str, fields: Any) -> Envelope:
    return Envelope(_entry_seq(entry_id), fields[b"t"].decode(), orjson.loads(fields[b"d"]))
