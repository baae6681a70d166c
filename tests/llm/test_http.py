"""The pooled upstream HTTP client over real sockets: framing, reuse, failures, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import orjson
import pytest

from daehwa.errors import ConfigError, ProviderError, ProviderTimeout
from daehwa.llm.base import GenerationParams
from daehwa.llm.http import (
    EXPIRE_BATCH,
    UpstreamClient,
    UpstreamClients,
    origin_of,
    retry_after_seconds,
)
from daehwa.llm.http_connection import HIGH_WATER
from daehwa.llm.openai import OpenAIModel
from tests.fakes.http_server import FakeHTTPServer, RecordedRequest, Reply
from tests.fakes.openai_upstream import DEFAULT_TEXT, FakeOpenAIUpstream
from tests.fakes.scenario import pieces
from tests.llm.conftest import ModelFactory
from tests.llm.streams import collect, text_of, user

PATH = "/v1/chat/completions"


def body(spec: str = "text") -> bytes:
    message = {"role": "user", "content": "안녕"}
    return orjson.dumps({"model": f"scenario:{spec}", "stream": True, "messages": [message]})


async def fetch(client: UpstreamClient, spec: str = "text") -> bytes:
    async with await client.request("POST", PATH, body=body(spec)) as response:
        assert response.status == 200
        return await response.read()


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (up to 5 s) for a condition the other side of a socket settles."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
async def test_body_framings(
    fake: FakeOpenAIUpstream, client: UpstreamClient, framing: str
) -> None:
    data = await fetch(client, f"text framing={framing}")
    assert data.endswith(b"data: [DONE]\n\n")
    # Role chunk, 16 pieces of text, finish, [DONE].
    assert data.count(b"\n\n") == 19


async def test_json_body_with_content_length(client: UpstreamClient) -> None:
    async with await client.request("GET", "/v1/models") as response:
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert orjson.loads(await response.read())["data"][0]["id"] == "fake"
        assert response.complete


async def test_sequential_requests_reuse_one_connection(
    fake: FakeOpenAIUpstream, client: UpstreamClient
) -> None:
    for _ in range(5):
        await fetch(client)
    assert (client.connections_opened, fake.connections) == (1, 1)
    assert client.idle_connections == 1


async def test_concurrent_streams_then_reuse(
    fake: FakeOpenAIUpstream, client: UpstreamClient
) -> None:
    await asyncio.gather(*(fetch(client, "text delay=0.01") for _ in range(20)))
    assert client.connections_opened == 20
    await asyncio.gather(*(fetch(client, "text delay=0.01") for _ in range(20)))
    assert client.connections_opened == 20, "the second wave reuses the idle connections"
    assert fake.connections == 20


async def test_max_connections_bounds_the_pool(fake: FakeOpenAIUpstream) -> None:
    client = UpstreamClient(fake.base_url, max_connections=2)
    results = await asyncio.gather(*(fetch(client, "text delay=0.005") for _ in range(6)))
    assert all(r.endswith(b"[DONE]\n\n") for r in results)
    assert fake.connections == 2
    await client.aclose()


async def test_pool_exhausted_times_out_as_busy(fake: FakeOpenAIUpstream) -> None:
    client = UpstreamClient(fake.base_url, max_connections=1, connect_timeout=0.2)
    held = await client.request("POST", PATH, body=body("stall"))
    with pytest.raises(ProviderTimeout, match="busy"):
        await client.request("POST", PATH, body=body())
    await held.aclose()
    assert (await fetch(client)).endswith(b"[DONE]\n\n"), "the slot came back"
    await client.aclose()


async def test_closing_a_stream_early_drops_its_connection(
    fake: FakeOpenAIUpstream, client: UpstreamClient, make_model: ModelFactory
) -> None:
    fake.enqueue("text tokens=500 delay=0.01")
    stream = make_model().stream(user(), GenerationParams())
    first = await anext(stream)
    assert first.text
    await stream.aclose()
    # The server notices on its next write; the half-read connection is never reused.
    await eventually(lambda: fake.open_connections == 0)
    assert client.idle_connections == 0
    await collect(make_model())
    assert client.connections_opened == 2


async def test_cancelling_the_consumer_closes_the_connection(
    fake: FakeOpenAIUpstream, client: UpstreamClient, make_model: ModelFactory
) -> None:
    fake.enqueue("text tokens=500 delay=0.01")
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in make_model().stream(user(), GenerationParams()):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: fake.open_connections == 0)
    assert client.idle_connections == 0


async def test_stopping_at_the_final_chunk_still_reuses_the_connection(
    fake: FakeOpenAIUpstream, client: UpstreamClient, make_model: ModelFactory
) -> None:
    # The end of the chunked body comes 50 ms after [DONE]: the provider waits for it.
    fake.enqueue("text end_delay=0.05")
    stream = make_model().stream(user(), GenerationParams())
    async for chunk in stream:
        if chunk.finish_reason:
            break
    await stream.aclose()
    assert client.idle_connections == 1
    await collect(make_model())
    assert fake.connections == 1


async def test_reset_mid_body_is_a_retryable_disconnect(client: UpstreamClient) -> None:
    response = await client.request("POST", PATH, body=body("truncate"))
    with pytest.raises(ProviderError) as info:
        await response.read()
    await response.aclose()
    assert (info.value.code, info.value.retryable) == ("upstream_disconnected", True)
    assert client.idle_connections == 0


async def test_read_timeout_when_the_upstream_goes_silent(fake: FakeOpenAIUpstream) -> None:
    client = UpstreamClient(fake.base_url, read_timeout=0.2)
    async with await client.request("POST", PATH, body=body("stall")) as response:
        with pytest.raises(ProviderTimeout, match=r"no data for 0\.2 s"):
            await response.read()
    await client.aclose()


async def test_slow_reader_pauses_and_resumes_the_socket(
    fake: FakeOpenAIUpstream, client: UpstreamClient
) -> None:
    tokens = 3 * HIGH_WATER // 200
    async with await client.request("POST", PATH, body=body(f"text tokens={tokens}")) as response:
        await asyncio.sleep(0.3)  # let the upstream fill the buffer past the high-water mark
        data = await response.read(limit=1 << 30)
    assert len(data) > 2 * HIGH_WATER
    assert data.endswith(b"[DONE]\n\n")


# -- a raw server for what the fake cannot do: odd HTTP --------------------------
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            number = 0
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    number += 1
                    if not await handler(reader, writer, number):
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        if n == 2:
            return False  # close the kept-alive connection without answering
        writer.write(OK)
        return True

    client = UpstreamClient(await raw_server(handler))
    for _ in range(2):
        async with await client.request("POST", "/", body=b"{}") as response:
            assert await response.read() == b"ok"
    # The second request found its kept-alive connection dead and went out on a new one.
    assert client.connections_opened == 2
    await client.aclose()


async def test_idle_connection_closed_by_the_server_is_not_reused(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(OK)
        await writer.drain()
        return False  # keep-alive advertised, then closed (a server's idle timeout)

    client = UpstreamClient(await raw_server(handler))
    async with await client.request("POST", "/", body=b"{}") as response:
        assert await response.read() == b"ok"
    await eventually(lambda: client._idle == [] or not client._idle[0].usable)
    async with await client.request("POST", "/", body=b"{}") as response:
        assert await response.read() == b"ok"
    assert client.connections_opened == 2
    await client.aclose()


async def test_idle_timeout_expires_connections(fake: FakeOpenAIUpstream) -> None:
    client = UpstreamClient(fake.base_url, idle_timeout=0.0)
    await fetch(client)
    await fetch(client)
    assert client.connections_opened == 2
    await client.aclose()


async def test_idle_connections_close_when_they_expire_not_on_the_next_request(
    fake: FakeOpenAIUpstream,
) -> None:
    client = UpstreamClient(fake.base_url, idle_timeout=0.3)
    # More than one batch of expiring connections.
    await asyncio.gather(*(fetch(client) for _ in range(EXPIRE_BATCH + 8)))
    assert client.idle_connections == EXPIRE_BATCH + 8
    await fetch(client)  # taken from the pool and put back: the newest idle one
    assert client.connections_opened == EXPIRE_BATCH + 8
    # No request comes: the server still sees every one closed once it expired.
    await eventually(lambda: client.idle_connections == 0 and fake.open_connections == 0)
    await fetch(client)
    assert client.connections_opened == EXPIRE_BATCH + 9
    await client.aclose()
    await eventually(lambda: fake.open_connections == 0)


async def test_fresh_connection_closed_without_answer_is_not_retried(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    calls = 0

    async def handler(_: asyncio.StreamReader, __: asyncio.StreamWriter, n: int) -> bool:
        nonlocal calls
        calls += 1
        return False

    client = UpstreamClient(await raw_server(handler))
    with pytest.raises(ProviderError) as info:
        await client.request("POST", "/", body=b"{}")
    assert (info.value.code, info.value.retryable, calls) == ("upstream_disconnected", True, 1)
    await client.aclose()


async def test_informational_responses_are_skipped(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK)
        return True

    client = UpstreamClient(await raw_server(handler))
    async with await client.request("POST", "/", body=b"{}") as response:
        assert (response.status, await response.read()) == (200, b"ok")
    assert client.idle_connections == 1
    await client.aclose()


async def test_malformed_response_is_a_protocol_error(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        return True

    client = UpstreamClient(await raw_server(handler))
    with pytest.raises(ProviderError) as info:
        await client.request("POST", "/", body=b"{}")
    assert info.value.code == "upstream_protocol_error"
    await client.aclose()


async def test_connection_close_header_is_honoured(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        return False

    client = UpstreamClient(await raw_server(handler))
    for _ in range(2):
        async with await client.request("POST", "/", body=b"{}") as response:
            assert await response.read() == b"ok"
    assert (client.connections_opened, client.idle_connections) == (2, 0)
    await client.aclose()


# -- TLS --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_upstream(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)
    async with FakeOpenAIUpstream(ssl=server_ssl) as fake:
        assert fake.base_url.startswith("https://")
        trusting = UpstreamClient(
            fake.base_url, ssl_context=ssl.create_default_context(cafile=cert)
        )
        model = OpenAIModel("tls", client=trusting, base_url=fake.base_url, model="gpt-4o")
        assert text_of(await collect(model)) == DEFAULT_TEXT
        await collect(model)
        assert trusting.connections_opened == 1, "TLS connections are kept alive too"
        await trusting.aclose()

        default = UpstreamClient(fake.base_url)  # the system CAs do not know this certificate
        with pytest.raises(ProviderError) as info:
            await default.request("GET", "/v1/models")
        assert (info.value.code, info.value.retryable) == ("upstream_tls", False)
        await default.aclose()


# -- small parts --------------------------------------------------------------------
def test_header_injection_is_refused() -> None:
    client = UpstreamClient("http://127.0.0.1:1")
    with pytest.raises(ConfigError):
        client._head("POST", "/", b"", {"Authorization": "Bearer key\n"})


def test_origins() -> None:
    assert origin_of("https://api.z.ai/api/paas/v4") == ("https", "api.z.ai", 443)
    assert origin_of("http://[::1]:8000/v1") == ("http", "::1", 8000)
    for bad in ("ftp://x", "api.openai.com/v1", "http://h:99999"):
        with pytest.raises(ConfigError):
            origin_of(bad)


def test_one_client_per_origin() -> None:
    clients = UpstreamClients()
    a = clients.get("http://127.0.0.1:8000/v1")
    assert clients.get("http://127.0.0.1:8000/other/v1") is a
    assert clients.get("http://127.0.0.1:8001/v1") is not a
    assert len(clients.clients()) == 2


def test_retry_after_as_http_date() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds({"retry-after": later}, now=now.timestamp()) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds({"retry-after": earlier}, now=now.timestamp()) == 0.0


async def test_closed_client_refuses_requests(client: UpstreamClient) -> None:
    await client.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await client.request("GET", "/v1/models")


class _Echo(FakeHTTPServer):
    async def handle(self, request: RecordedRequest, reply: Reply) -> None:
        await reply.json(200, {"headers": request.headers, "path": request.path})


async def test_request_head() -> None:
    async with _Echo() as server:
        client = UpstreamClient(server.url + "/ignored")
        async with await client.request(
            "POST", "/v1/x?y=1", body=b"{}", headers={"X-Custom": "값".encode().decode("latin-1")}
        ) as response:
            echoed = orjson.loads(await response.read())
        assert echoed["path"] == "/v1/x?y=1"
        assert echoed["headers"]["host"] == f"127.0.0.1:{server.port}"
        assert echoed["headers"]["content-length"] == "2"
        assert echoed["headers"]["user-agent"].startswith("daehwa/")
        await client.aclose()


# -- uvloop (what uvicorn runs on) ------------------------------------------------------
def test_the_client_on_uvloop(certificate: tuple[Path, Path]) -> None:
    uvloop = pytest.importorskip("uvloop")
    cert, key = certificate

    async def scenarios() -> None:
        async with FakeOpenAIUpstream() as fake:
            client = UpstreamClient(fake.base_url, read_timeout=0.3)
            for framing in ("chunked", "length", "close"):
                assert (await fetch(client, f"text framing={framing}")).endswith(b"[DONE]\n\n")
            await asyncio.gather(*(fetch(client, "text delay=0.005") for _ in range(5)))
            with pytest.raises(ProviderError, match="closed before the response ended"):
                await fetch(client, "truncate")
            with pytest.raises(ProviderTimeout):
                await fetch(client, "stall")
            opened = client.connections_opened
            await fetch(client)
            assert client.connections_opened == opened, "kept-alive connection reused"
            await client.aclose()
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(cert, key)
        async with FakeOpenAIUpstream(ssl=server_ssl) as fake:
            context = ssl.create_default_context(cafile=cert)
            client = UpstreamClient(fake.base_url, ssl_context=context)
            await fetch(client)
            await fetch(client)
            assert client.connections_opened == 1
            await client.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert type(runner.get_loop()).__module__.startswith("uvloop")
        runner.run(scenarios())


@contextlib.asynccontextmanager
async def paced(
    fake: FakeOpenAIUpstream, pace: float
) -> AsyncIterator[tuple[UpstreamClient, OpenAIModel]]:
    """A client of ``fake`` paced at ``pace`` seconds, and a model on it; closed after."""
    client = UpstreamClient(fake.base_url, pace=pace)
    try:
        yield client, OpenAIModel("paced", client=client, base_url=fake.base_url, model="fake")
    finally:
        await client.aclose()


async def test_a_paced_stream_sends_the_first_text_at_once_then_gathers_the_rest(
    fake: FakeOpenAIUpstream,
) -> None:
    # Tokens 30 ms apart, hand-overs at most every 300 ms: the first text goes alone,
    # the others arrive in a few joined chunks, and nothing is lost or reordered.
    async with paced(fake, 0.3) as (_, model):
        fake.enqueue("text tokens=12 delay=0.03")
        chunks = await collect(model)
    texts = [c.text for c in chunks[:-1]]
    expected = pieces(DEFAULT_TEXT, 12)
    assert texts[0] == expected[0], "the first token is never held"
    assert "".join(texts) == "".join(expected)
    assert 2 <= len(texts) < len(expected)
    assert chunks[-1].finish_reason == "stop"


async def test_a_paced_body_is_read_to_its_end_and_its_connection_reused(
    fake: FakeOpenAIUpstream,
) -> None:
    # A pace longer than the reply: the socket is not read while a hand-over waits,
    # and the rest (the body's end included) comes with the next one.
    async with paced(fake, 0.5) as (client, model):
        fake.enqueue("text tokens=4 delay=0.05")
        chunks = await collect(model)
        assert [c.text for c in chunks[:-1]] == [
            pieces(DEFAULT_TEXT, 4)[0],
            "".join(pieces(DEFAULT_TEXT, 4)[1:]),
        ]
        # A whole-body read is never paced, and the connection went back to the pool.
        assert (await fetch(client)).endswith(b"data: [DONE]\n\n")
        assert client.connections_opened == 1
