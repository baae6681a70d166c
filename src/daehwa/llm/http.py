"""A lean, pooled HTTP/1.1 client for upstream model APIs (asyncio + httptools).

Why not httpx or aiohttp: a streamed model reply is hundreds of small body
pieces, and per-piece CPU is what limits how many replies one process can
relay. This client does the least per piece (one parser callback, one deque
append, one future wake-up); docs/providers.md has the measurements.

One :class:`UpstreamClient` serves one origin (scheme, host, port) and is
shared by every model that talks to it: it keeps up to ``max_connections``
exchanges in flight and reuses idle keep-alive connections. Errors come out
as :class:`~daehwa.errors.ProviderError` (``retryable=True``) or
:class:`~daehwa.errors.ProviderTimeout`; nothing here retries a request,
except once when a reused keep-alive connection turns out to have been closed
by the server before it answered a single byte.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from daehwa.errors import ConfigError, ProviderError, ProviderTimeout
from daehwa.llm.http_connection import Connection, StaleConnection, UpstreamResponse
from daehwa.llm.pacing import Pacer

__all__ = [
    "UpstreamClient",
    "UpstreamClients",
    "UpstreamResponse",
    "origin_of",
    "retry_after_seconds",
]

USER_AGENT = "daehwa/0.1"
# Expired idle connections closed per loop iteration: each close costs tens of µs.
EXPIRE_BATCH = 32
# A sweep timer may fire a little early: connections within this much of expiring go too.
EXPIRY_SLACK = 0.01


def origin_of(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL; raises ConfigError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url!r} is not an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ConfigError(f"{url!r} has an invalid port") from exc
    return parts.scheme, parts.hostname, port


class UpstreamClient:
    """A pool of keep-alive connections to one origin, safe to share across tasks.

    ``read_timeout`` bounds the silence between two reads (not the whole
    reply); ``idle_timeout`` closes connections idle for longer, when they
    expire rather than in front of the next request (after a busy spell,
    closing hundreds of them takes milliseconds). A server that closed an idle
    connection first (uvicorn does after 5 s) is noticed when its close
    arrives, or at worst by the one stale-connection retry.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 500,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        label: str | None = None,
        pace: float = 0.0,
        pacer: Pacer | None = None,
    ) -> None:
        self.scheme, self.host, self.port = origin_of(base_url)
        self.origin = f"{self.scheme}://{self.host}:{self.port}"
        self.label = label or self.origin
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        #: When paced streams are read (shared with the other clients of a process).
        self.pacer = pacer if pacer is not None else Pacer(pace) if pace > 0 else None
        self._ssl: ssl.SSLContext | None = None
        if self.scheme == "https":
            # Built once here: loading the CA bundle blocks for milliseconds.
            self._ssl = ssl_context or ssl.create_default_context()
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.scheme == "https" else 80
        self._host_header = host if self.port == default_port else f"{host}:{self.port}"
        # Oldest first: a connection is taken from the end and put back there.
        self._idle: list[Connection] = []
        # Closes the connections that expire, from the oldest: at most one pending.
        self._sweep: asyncio.Handle | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closed = False
        #: Connections opened over the client's life (tests assert reuse with it).
        self.connections_opened = 0

    @property
    def pace(self) -> float:
        """Seconds between two reads of a streamed response after its first text (0: unpaced)."""
        return self.pacer.pace if self.pacer is not None else 0.0

    @property
    def idle_connections(self) -> int:
        """How many keep-alive connections wait for reuse."""
        return len(self._idle)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send a request; return once the response's status and headers are in.

        The caller must ``await response.aclose()`` (or use ``async with``):
        that returns the connection to the pool or drops it.
        """
        if self._closed:
            raise ProviderError(f"{self.label}: the HTTP client is closed", provider=self.label)
        head = self._head(method, path, body, headers)
        timeout = self.read_timeout if read_timeout is None else read_timeout
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        slots = self._slots
        try:
            async with asyncio.timeout(self.connect_timeout):
                await slots.acquire()
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.label}: all {self.max_connections} connections stayed busy "
                f"for {self.connect_timeout:g} s",
                provider=self.label,
            ) from None
        try:
            # A reused connection may have been closed by the server meanwhile:
            # then (and only then, nothing having been answered) try a fresh one.
            while True:
                conn = await self._connection()
                try:
                    response = conn.send(
                        head + body, timeout, slots.release, self._put_back, self.pacer
                    )
                except StaleConnection:
                    conn.abort()
                    continue
                try:
                    await response.wait_headers()
                except StaleConnection:
                    response.abandon()
                    continue
                except BaseException:
                    response.abandon()
                    raise
                return response
        except BaseException:
            slots.release()
            raise

    def _head(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str] | None
    ) -> bytes:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self._host_header}",
            f"User-Agent: {USER_AGENT}",
            f"Content-Length: {len(body)}",
        ]
        for name, value in (headers or {}).items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
                # Header injection, or a key read with its trailing newline.
                raise ConfigError(f"HTTP header {name!r} contains a line break or colon")
            lines.append(f"{name}: {value}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    async def _connection(self) -> Connection:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since >= self.idle_timeout:
                # The newest has expired, so have the older ones: the pending sweep closes them.
                conn.close()
                break
            if conn.usable:
                return conn
            conn.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop, self.label),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.label}: no connection to {self.origin} within {self.connect_timeout:g} s",
                provider=self.label,
            ) from None
        except ssl.SSLCertVerificationError as exc:
            # A certificate that does not verify will not verify on the next try either.
            raise ProviderError(
                f"{self.label}: TLS certificate of {self.origin} rejected: {exc.verify_message}",
                code="upstream_tls",
                retryable=False,
                provider=self.label,
            ) from exc
        except OSError as exc:
            raise ProviderError(
                f"{self.label}: cannot connect to {self.origin}: {exc.strerror or exc}",
                code="upstream_unreachable",
                retryable=True,
                provider=self.label,
            ) from exc
        self.connections_opened += 1
        return conn

    def _put_back(self, conn: Connection) -> None:
        if self._closed or len(self._idle) >= self.max_connections:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = loop.call_at(conn.idle_since + self.idle_timeout, self._expire)

    def _expire(self) -> None:
        """Close the connections idle for ``idle_timeout``, a batch per loop iteration."""
        self._sweep = None
        idle = self._idle
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.idle_timeout + EXPIRY_SLACK
        count = 0
        while count < len(idle) and count < EXPIRE_BATCH and idle[count].idle_since <= cutoff:
            count += 1
        expired = idle[:count]
        del idle[:count]
        for conn in expired:
            conn.close()
        if idle and idle[0].idle_since <= cutoff:
            self._sweep = loop.call_soon(self._expire)  # the next batch, after what else is ready
        elif idle:
            self._sweep = loop.call_at(idle[0].idle_since + self.idle_timeout, self._expire)

    async def aclose(self) -> None:
        """Close idle connections; in-flight responses are dropped as they finish."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class UpstreamClients:
    """One shared :class:`UpstreamClient` per origin, for every model of a process."""

    def __init__(
        self,
        *,
        max_connections: int = 500,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        pace: float = 0.0,
    ) -> None:
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssl_context = ssl_context
        self.pace = pace
        # One pacer for all: streams of different upstreams are read on the same ticks.
        self._pacer = Pacer(pace) if pace > 0 else None
        self._clients: dict[str, UpstreamClient] = {}

    def get(self, base_url: str, *, label: str | None = None) -> UpstreamClient:
        """The client for ``base_url``'s origin, created on first use."""
        scheme, host, port = origin_of(base_url)
        key = f"{scheme}://{host}:{port}"
        client = self._clients.get(key)
        if client is None:
            client = UpstreamClient(
                base_url,
                max_connections=self.max_connections,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                ssl_context=self.ssl_context,
                label=label,
                pacer=self._pacer,
            )
            self._clients[key] = client
        return client

    def clients(self) -> list[UpstreamClient]:
        """Every client created so far."""
        return list(self._clients.values())

    async def aclose(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            await client.aclose()


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The upstream's wait hint: ``retry-after-ms``, else ``retry-after`` (seconds or a date).

    ``headers`` has lower-case names; ``now`` (a UNIX time) is for tests.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
