"""``RedisStore``: history and users in Redis, every key with a TTL.

Layout under the prefix ``P`` (``[store] key_prefix``)::

    P:conv:{id}           hash   a conversation (JSON-encoded field values)
    P:conv:{id}:seq       zset   message ids by seq
    P:conv:{id}:time      zset   message ids by created_at (microseconds)
    P:conv:{id}:req       hash   request id -> message id
    P:msg:{id}            string a message: one JSON object (see redis_scripts)
    P:user:{id}           hash   a user
    P:user:{id}:convs     zset   the user's conversation ids by updated_at
    P:user:{id}:keys      set    the user's credential hashes
    P:username:{name}     string the user id
    P:key:{hash}          hash   a credential
    P:users               set    every user id
    P:streaming           set    ids of messages still streaming

No key lives forever: see :mod:`daehwa.store.redis_scripts` for how TTLs are
kept (``[store] ttl_days``, 30 by default, refreshed by every read and write).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.client import NEVER_DECODE
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from daehwa.errors import Conflict, NotFound, StoreError
from daehwa.messages import (
    Conversation,
    Message,
    MessageStatus,
    ToolCall,
    Usage,
    User,
    new_id,
    utcnow,
)
from daehwa.store import redis_scripts as lua
from daehwa.store import redis_user_scripts as user_lua
from daehwa.store.base import Page
from daehwa.store.paging import (
    as_utc,
    check_fields,
    check_kind,
    check_limit,
    check_query,
    decode_cursor,
    encode_cursor,
    from_micros,
    to_micros,
)
from daehwa.store.redis_records import (
    conversation_from_fields,
    json_pairs,
    json_text,
    message_from_record,
    record_body,
    stored_message,
    user_from_fields,
)

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000
# Conversations searched per script call; keeps each call short for Redis.
_SEARCH_BATCH = 20
# Rounds of read-change-write an update_message tries before giving up.
_UPDATE_TRIES = 50
# Connections per process (``?max_connections=N`` in the URL overrides it). Each
# call holds one for a single round trip; when all are busy a call waits for
# one, up to _POOL_WAIT seconds, instead of failing.
_POOL_SIZE = 32
_POOL_WAIT = 10.0


class RedisStore:
    """A :class:`~daehwa.store.base.Store` in Redis (a single server, not Cluster).

    ``ttl_days`` is how long a conversation or user lives after its last use;
    the deadline is refreshed at most once per ``ttl_days / 30``, so the
    actual life is between ``ttl_days`` and ``ttl_days * 31 / 30``.
    """

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = "daehwa", ttl_days: float = 30.0
    ) -> None:
        if ttl_days <= 0:
            raise ValueError("ttl_days must be positive")
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(1000, int(ttl_days * _DAY_MS))
        self.slack_ms = self.ttl_ms // 30
        self._scripts: dict[str, AsyncScript] = {}

    @classmethod
    async def open(cls, url: str, *, prefix: str = "daehwa", ttl_days: float = 30.0) -> RedisStore:
        """A store on the Redis server at ``url``, checked with a PING."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url, decode_responses=True, max_connections=_POOL_SIZE, timeout=_POOL_WAIT
        )
        client = aioredis.Redis.from_pool(pool)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise StoreError(f"cannot reach Redis for store.url: {exc}") from exc
        return cls(client, prefix=prefix, ttl_days=ttl_days)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    # -- conversations ---------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        """Store a new conversation; its times are set to now."""
        now = utcnow()
        cid = conversation.id or new_id()
        created = await self._run(
            lua.CREATE_CONVERSATION,
            cid,
            conversation.user_id,
            to_micros(now),
            *json_pairs(
                {
                    "title": conversation.title or "",
                    "persona": conversation.persona,
                    "variables": dict(conversation.variables or {}),
                    "model": conversation.model,
                    "summary": conversation.summary or "",
                    "summary_seq": conversation.summary_seq,
                }
            ),
        )
        if not created:
            raise Conflict(f"conversation {cid} already exists")
        stored = Conversation(
            id=cid,
            user_id=conversation.user_id,
            title=conversation.title or "",
            persona=conversation.persona,
            variables=dict(conversation.variables or {}),
            model=conversation.model,
            summary=conversation.summary or "",
            summary_seq=conversation.summary_seq,
        )
        stored.created_at = stored.updated_at = from_micros(to_micros(now))
        return stored

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, or ``None``."""
        found = await self._run(lua.GET_CONVERSATION, conversation_id)
        return conversation_from_fields(found) if found else None

    async def list_conversations(
        self, user_id: str, *, limit: int = 20, before: str | None = None
    ) -> Page[Conversation]:
        """The user's conversations, most recently updated first."""
        check_limit(limit)
        top, after = "+inf", ""
        if before:
            micros, after = decode_cursor(before)
            top = str(micros)
        rows = await self._run(lua.LIST_CONVERSATIONS, user_id, top, after, limit)
        found = [conversation_from_fields(row) for row in rows]
        items = found[:limit]
        more = len(found) > limit
        return Page(items, encode_cursor(items[-1].updated_at, items[-1].id) if more else None)

    async def update_conversation(self, conversation_id: str, **fields: Any) -> Conversation:
        """Change the given fields; ``updated_at`` moves forward."""
        fields = check_fields(fields)
        found = await self._run(
            lua.UPDATE_CONVERSATION, conversation_id, to_micros(utcnow()), *json_pairs(fields)
        )
        if not found:
            raise NotFound(f"conversation {conversation_id} not found")
        return conversation_from_fields(found)

    async def delete_conversation(self, conversation_id: str) -> None:
        """Remove the conversation and its messages (nothing happens if it is missing)."""
        await self._run(lua.DELETE_CONVERSATION, conversation_id)

    async def clear_conversation(self, conversation_id: str) -> None:
        """Remove every message and the summary; ``seq`` keeps counting up."""
        await self._run(lua.CLEAR_CONVERSATION, conversation_id)

    # -- messages --------------------------------------------------------------

    async def append_message(self, message: Message) -> Message:
        """Store a new message with the next ``seq``."""
        mid = message.id or new_id()
        status = MessageStatus(message.status).value
        body = record_body(message, mid)
        result = await self._run(
            lua.APPEND_MESSAGE,
            message.conversation_id,
            mid,
            to_micros(utcnow()),
            message.request_id or "",
            status,
            body,
        )
        _check_appended(result, message.conversation_id, mid)
        return stored_message(body, status, result[1], result[2])

    async def append_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Store new messages in one script: all of them, or none if one cannot be."""
        if not messages:
            return []
        ids = [m.id or new_id() for m in messages]
        statuses = [MessageStatus(m.status).value for m in messages]
        bodies = [record_body(m, mid) for m, mid in zip(messages, ids, strict=True)]
        args: list[str | bytes | int] = [to_micros(utcnow())]
        for message, mid, status, body in zip(messages, ids, statuses, bodies, strict=True):
            args += [message.conversation_id, mid, message.request_id or "", status, body]
        result = await self._run(lua.APPEND_MESSAGES, *args)
        if not isinstance(result[0], list):
            failed = (int(result[1]) - 5) // 5
            _check_appended(result, messages[failed].conversation_id, ids[failed])
        return [
            stored_message(body, status, seq, created)
            for body, status, (seq, created) in zip(bodies, statuses, result, strict=True)
        ]

    async def update_message(
        self,
        message_id: str,
        *,
        content: str | None = None,
        status: MessageStatus | None = None,
        usage: Usage | None = None,
        tool_calls: Sequence[ToolCall] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Message:
        """Change the given fields of a stored message.

        The record is read, changed here and written back only if it did not
        change meanwhile (else read again), so concurrent updates all land.
        """
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = MessageStatus(status).value
        if content is not None:
            changes["content"] = content
        if usage is not None:
            changes["usage"] = usage.to_dict()
        if tool_calls is not None:
            changes["tool_calls"] = [t.to_dict() for t in tool_calls]
        if metadata is not None:
            changes["metadata"] = metadata
        found = await self._run(lua.GET_MESSAGE, message_id, raw=True)
        for _ in range(_UPDATE_TRIES):
            if not found:
                raise NotFound(f"message {message_id} not found")
            data = orjson.loads(found)
            if not changes:
                return message_from_record(data)
            data.update(changes)
            record = orjson.dumps(data)
            found = await self._run(lua.UPDATE_MESSAGE, message_id, found, record, raw=True)
            if found == 1:
                return message_from_record(orjson.loads(record))
        raise StoreError(f"message {message_id} kept changing; the update was not stored")

    async def get_message(self, message_id: str) -> Message | None:
        """The message, or ``None``."""
        found = await self._run(lua.GET_MESSAGE, message_id, raw=True)
        return message_from_record(orjson.loads(found)) if found else None

    async def find_by_request_id(self, conversation_id: str, request_id: str) -> Message | None:
        """The first message of the conversation sent with ``request_id``."""
        found = await self._run(lua.FIND_BY_REQUEST_ID, conversation_id, request_id, raw=True)
        return message_from_record(orjson.loads(found)) if found else None

    async def list_messages(
        self,
        conversation_id: str,
        *,
        limit: int = 50,
        before: int | None = None,
        since: datetime | None = None,
    ) -> Page[Message]:
        """A page of messages, oldest to newest inside the page."""
        check_limit(limit)
        bound = "+inf" if before is None else f"({before}"
        if since is None:
            rows = await self._run(
                lua.LIST_MESSAGES, conversation_id, "before", bound, 0, limit, raw=True
            )
            more = len(rows) > limit
            items = [message_from_record(orjson.loads(r)) for r in reversed(rows[:limit])]
            return Page(items, str(items[0].seq) if more else None)
        rows = await self._run(
            lua.LIST_MESSAGES,
            conversation_id,
            "since",
            bound,
            to_micros(as_utc(since)),
            limit,
            raw=True,
        )
        found = [message_from_record(orjson.loads(r)) for r in rows]
        if before is not None:
            found = [m for m in found if m.seq < before]
        more = len(found) > limit
        return Page(found[:limit], found[limit].created_at.isoformat() if more else None)

    async def last_message(self, conversation_id: str) -> Message | None:
        """The newest message of the conversation, if any."""
        found = await self._run(lua.LAST_MESSAGE, conversation_id, raw=True)
        return message_from_record(orjson.loads(found)) if found else None

    async def search_messages(self, user_id: str, query: str, *, limit: int = 20) -> list[Message]:
        """The user's messages containing ``query`` (ASCII case ignored), newest first.

        Conversations are read newest first; the search stops once the next
        conversation was last updated before the oldest match it would have
        to beat, so a recent hit does not scan all history.
        """
        check_limit(limit)
        needle = check_query(query).encode().lower().decode()
        index = f"{self.prefix}:user:{user_id}:convs"
        found: list[Message] = []
        offset = 0
        try:
            while True:
                batch = cast(
                    list[tuple[str, float]],
                    await self.client.zrevrange(
                        index, offset, offset + _SEARCH_BATCH - 1, withscores=True
                    ),
                )
                if not batch:
                    break
                offset += len(batch)
                if len(found) >= limit and batch[0][1] < to_micros(found[limit - 1].created_at):
                    break
                rows = await self._run(
                    lua.SEARCH_MESSAGES, needle, limit, *(c for c, _ in batch), raw=True
                )
                found.extend(message_from_record(orjson.loads(r)) for r in rows)
                found.sort(key=lambda m: (m.created_at, m.seq, m.id), reverse=True)
        except RedisError as exc:
            raise StoreError("the history store is unavailable") from exc
        return found[:limit]

    async def streaming_replies(self, *, created_before: datetime) -> list[str]:
        """Ids of ``streaming`` messages created before ``created_before``."""
        cutoff = str(to_micros(as_utc(created_before)))
        return [str(mid) for mid in await self._run(lua.STREAMING_BEFORE, cutoff)]

    async def mark_interrupted(self, message_ids: Collection[str] | None = None) -> int:
        """Turn ``streaming`` messages (all, or those of ``message_ids``) into ``incomplete``."""
        if message_ids is None:
            return int(await self._run(lua.MARK_INTERRUPTED))
        ids = sorted(set(message_ids))
        return int(await self._run(lua.MARK_THESE_INTERRUPTED, *ids)) if ids else 0

    # -- users -----------------------------------------------------------------

    async def create_user(self, user: User) -> User:
        """Store a new user; ids and names are unique."""
        uid = user.id or new_id()
        created_at = as_utc(user.created_at)
        stored = await self._run(
            user_lua.CREATE_USER,
            uid,
            user.name,
            "id",
            uid,
            "is_admin",
            "1" if user.is_admin else "0",
            "password_hash",
            json_text(user.password_hash),
            "created_us",
            to_micros(created_at),
        )
        if not stored:
            raise Conflict(f"user {user.name!r} already exists")
        return User(uid, user.name, user.is_admin, user.password_hash, created_at)

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None``."""
        found = await self._run(user_lua.GET_USER, "id", user_id)
        return user_from_fields(found) if found else None

    async def get_user_by_name(self, name: str) -> User | None:
        """The user called ``name``, or ``None``."""
        found = await self._run(user_lua.GET_USER, "name", name)
        return user_from_fields(found) if found else None

    async def list_users(self) -> list[User]:
        """Every user, oldest first."""
        users = [user_from_fields(row) for row in await self._run(user_lua.LIST_USERS)]
        return sorted(users, key=lambda u: (u.created_at, u.name))

    async def add_key(
        self,
        user_id: str,
        key_hash: str,
        *,
        kind: str = "api",
        expires_at: datetime | None = None,
    ) -> None:
        """Store a credential hash for an existing user."""
        check_kind(kind)
        now = utcnow()
        life = self.ttl_ms + self.slack_ms
        expires = ""
        if expires_at is not None:
            expires = str(to_micros(as_utc(expires_at)))
            # A credential goes when it expires, if that comes first.
            life = max(1, min(life, (to_micros(as_utc(expires_at)) - to_micros(now)) // 1000))
        result = await self._run(
            user_lua.ADD_KEY,
            user_id,
            key_hash,
            life,
            "kind",
            kind,
            "created_us",
            to_micros(now),
            "expires_us",
            expires,
            "revoked",
            "0",
        )
        if result == -1:
            raise NotFound(f"user {user_id} not found")
        if result == 0:
            raise Conflict("this credential already exists")

    async def user_for_key(self, key_hash: str, *, kind: str = "api") -> User | None:
        """The owner of a live credential of this kind, or ``None``."""
        found = await self._run(user_lua.USER_FOR_KEY, key_hash, kind, to_micros(utcnow()))
        return user_from_fields(found) if found else None

    async def revoke_key(self, key_hash: str) -> None:
        """Make a credential unusable (nothing happens if it is unknown)."""
        await self._run(user_lua.REVOKE_KEY, key_hash)

    async def delete_user(self, user_id: str) -> None:
        """Remove the user with their credentials, conversations and messages."""
        await self._run(user_lua.DELETE_USER, user_id)

    # -- inside ----------------------------------------------------------------

    async def _run(self, body: str, *args: str | bytes | int, raw: bool = False) -> Any:
        """Run one script (prelude + ``body``) with the TTL and prefix arguments first.

        ``raw`` keeps the reply's strings as bytes: message records go to orjson
        as they came (decoding a page to str first costs as much again).
        """
        script = self._scripts.get(body)
        if script is None:
            script = self._scripts[body] = self.client.register_script(lua.PRELUDE + body)
        execute = cast(Callable[..., Awaitable[Any]], self.client.execute_command)
        head = (self.ttl_ms, self.slack_ms, self.prefix)
        options: dict[str, Any] = {NEVER_DECODE: []} if raw else {}
        try:
            try:
                return await execute("EVALSHA", script.sha, 0, *head, *args, **options)
            except NoScriptError:  # a restarted server has forgotten it
                script.sha = await self.client.script_load(script.script)
                return await execute("EVALSHA", script.sha, 0, *head, *args, **options)
        except (RedisError, OSError) as exc:
            log.warning("redis store call failed: %s", exc)
            raise StoreError("the history store is unavailable") from exc


def _check_appended(result: list[Any], conversation_id: str, mid: str) -> None:
    if result[0] == 0:
        raise NotFound(f"conversation {conversation_id} not found")
    if result[0] == -1:
        raise Conflict(f"message {mid} already exists")
