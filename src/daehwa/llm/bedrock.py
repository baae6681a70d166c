"""Anthropic Claude on Amazon Bedrock, through InvokeModelWithResponseStream.

``POST {endpoint}/model/{model id}/invoke-with-response-stream`` with the
Messages body (no ``model``/``stream``, plus ``anthropic_version``), answered
as AWS event-stream frames whose ``chunk`` payloads wrap the direct API's
events in base64 (PROVIDERS.md §4). So the request and event code is
:mod:`daehwa.llm.anthropic`'s, the frames go through our own checksum-checking
decoder (:mod:`daehwa.llm.eventstream`), and the bytes through the shared
pooled HTTP client — not the SDK's httpx, not boto3's sync client.

botocore is used for what it is the reference for: the credential chain
(environment, shared config and credentials files with ``AWS_PROFILE``, SSO,
web identity, container and instance metadata). It blocks (files, metadata
HTTP calls), so credentials resolve in a worker thread and are re-frozen there
every minute (botocore refreshes expiring ones); :meth:`BedrockModel.warm`
resolves them at start-up. botocore is imported with this module, which the
registry imports only when a Bedrock model is configured (it takes a while).
Requests are signed by :mod:`daehwa.llm.sigv4`, several times cheaper than
botocore's signer.
A Bedrock API key (``AWS_BEARER_TOKEN_BEDROCK`` or ``api_key_env``) is sent
as ``Authorization: Bearer`` instead.

Options: those of :mod:`daehwa.llm.anthropic`, plus ``region`` and ``profile``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import partial
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.session  # type: ignore[import-untyped]
import orjson

from daehwa.config import ModelSettings
from daehwa.errors import ConfigError, ProviderError, ProviderTimeout, RateLimited
from daehwa.llm.anthropic import check_options, messages_body
from daehwa.llm.anthropic_stream import EventReader
from daehwa.llm.base import (
    Chunk,
    GenerationParams,
    malformed_stream,
    piece_chunks,
    truncated_stream,
)
from daehwa.llm.eventstream import EventStreamDecoder, EventStreamError, EventStreamMessage
from daehwa.llm.http import UpstreamClient, retry_after_seconds
from daehwa.llm.openai_errors import scrub
from daehwa.llm.sigv4 import Credentials, sign
from daehwa.messages import Message

__all__ = ["AwsAuth", "BedrockModel", "bedrock_error", "endpoint_for", "region_for"]

BEDROCK_VERSION = "bedrock-2023-05-31"
_OWN_OPTIONS = frozenset({"region", "profile"})
# How often the frozen credentials are refreshed from botocore (in a thread).
_RECHECK_SECONDS = 60.0
_DRAIN = 1.0
_CONTEXT_HINTS = ("too long", "too many tokens", "context window", "context length")


def region_for(options: Mapping[str, Any]) -> str:
    """``options.region``, else ``AWS_REGION``, ``AWS_DEFAULT_REGION``, else us-east-1.

    (A region set only in a profile's config file is not read here: name it in
    ``options.region`` so start-up does not parse AWS config files.)
    """
    region = options.get("region") or os.environ.get("AWS_REGION")
    return str(region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def endpoint_for(config: ModelSettings) -> str:
    """The base URL a Bedrock model talks to: ``base_url``, else the regional endpoint."""
    if config.base_url:
        return config.base_url.rstrip("/")
    return f"https://bedrock-runtime.{region_for(config.options)}.amazonaws.com"


class AwsAuth:
    """Signs Bedrock requests: SigV4 with botocore's credential chain, or a Bearer key."""

    def __init__(self, region: str, *, profile: str | None = None, bearer: str | None = None):
        self.region = region
        self.profile = profile
        self._bearer = bearer.strip() if bearer else None
        self._credentials: Any = None
        self._frozen: Credentials | None = None
        self._checked = -_RECHECK_SECONDS
        self._lock = asyncio.Lock()

    async def headers(
        self, host: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, str]:
        """``headers`` plus authentication for a POST of ``body`` to ``path`` on ``host``."""
        if self._bearer:
            return {**headers, "Authorization": f"Bearer {self._bearer}"}
        credentials = await self._current()
        return sign(
            credentials,
            region=self.region,
            service="bedrock",
            host=host,
            path=path,
            body=body,
            headers=headers,
        )

    async def _current(self) -> Credentials:
        if time.monotonic() - self._checked < _RECHECK_SECONDS and self._frozen is not None:
            return self._frozen
        async with self._lock:
            if time.monotonic() - self._checked >= _RECHECK_SECONDS or self._frozen is None:
                self._frozen = await asyncio.to_thread(self._resolve)
                self._checked = time.monotonic()
        assert self._frozen is not None
        return self._frozen

    async def warm(self) -> None:
        """Resolve the credentials now (at start-up) rather than on the first request."""
        if not self._bearer:
            await self._current()

    def _resolve(self) -> Credentials:
        """Runs in a thread: walks the chain (files, maybe metadata calls), freezes."""
        if self._credentials is None:
            # botocore is only the credential source here: it never sends a model request.
            session = botocore.session.Session(profile=self.profile)
            self._credentials = session.get_credentials()
            if self._credentials is None:
                raise ProviderError(
                    "bedrock: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or AWS_BEARER_TOKEN_BEDROCK)",
                    code="upstream_auth",
                    retryable=False,
                )
        frozen = self._credentials.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)


class BedrockModel:
    """A :class:`~daehwa.llm.base.ChatModel` for Claude on Amazon Bedrock."""

    def __init__(
        self,
        name: str,
        *,
        client: UpstreamClient,
        model: str,
        auth: AwsAuth,
        base_url: str,
        temperature: float | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
        owns_client: bool = False,
    ) -> None:
        self.name = name
        self.model = model
        self._client = client
        self._owns_client = owns_client
        self._auth = auth
        self._temperature = temperature
        self._timeout = timeout
        self._options = dict(options or {})
        check_options(name, self._options, _OWN_OPTIONS)
        base = base_url.rstrip("/")
        # The model id is one path segment: ARNs and ids with ":" are percent-encoded.
        self._path = (
            f"{urlsplit(base).path}/model/{quote(model, safe='')}/invoke-with-response-stream"
        )
        # The Host header exactly as the HTTP client sends it: it is part of the signature.
        host = f"[{client.host}]" if ":" in client.host else client.host
        default_port = 443 if client.scheme == "https" else 80
        self._host = host if client.port == default_port else f"{host}:{client.port}"
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/vnd.amazon.eventstream",
        }
        self._headers.update(
            {str(k): str(v) for k, v in (self._options.get("headers") or {}).items()}
        )

    @classmethod
    def from_settings(
        cls, name: str, config: ModelSettings, client: UpstreamClient, *, owns_client: bool = False
    ) -> BedrockModel:
        """Build from ``[models.NAME]``; ``client`` must serve :func:`endpoint_for` (config)."""
        if not config.model:
            raise ConfigError(
                f"models.{name}.model is required (a Bedrock model id or inference profile, "
                "e.g. anthropic.claude-3-5-haiku-20241022-v1:0)"
            )
        bearer = config.api_key() or os.environ.get("AWS_BEARER_TOKEN_BEDROCK")
        profile = config.options.get("profile")
        auth = AwsAuth(
            region_for(config.options), profile=str(profile) if profile else None, bearer=bearer
        )
        return cls(
            name,
            client=client,
            model=config.model,
            auth=auth,
            base_url=endpoint_for(config),
            temperature=config.temperature,
            timeout=config.timeout,
            options=config.options,
            owns_client=owns_client,
        )

    def request_body(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        """The JSON body for one generation (public for tests and debugging)."""
        options = {k: v for k, v in self._options.items() if k not in ("beta", "extra_body")}
        body = messages_body(messages, params, temperature=self._temperature, options=options)
        body["anthropic_version"] = str(self._options.get("anthropic_version") or BEDROCK_VERSION)
        if self._options.get("beta"):
            body["anthropic_beta"] = list(self._options["beta"])  # a body field on Bedrock
        body.update(self._options.get("extra_body") or {})
        return body

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        """Stream the answer; closing the iterator closes the upstream response."""
        body = orjson.dumps(self.request_body(messages, params))
        try:
            headers = await self._auth.headers(self._host, self._path, body, self._headers)
            response = await self._client.request(
                "POST", self._path, body=body, headers=headers, read_timeout=self._timeout
            )
        except ProviderError as exc:
            exc.provider = self.name
            raise
        try:
            if response.status != 200:
                raw = await response.read(64 * 1024)
                raise _error_from_response(self.name, response.status, raw, response.headers)
            reader = EventReader(self.name)
            decoder = EventStreamDecoder()
            try:
                async for piece in response:
                    for chunk in piece_chunks(
                        partial(self._read_frame, reader),
                        decoder.feed(piece),
                        response.start_pacing,
                    ):
                        yield chunk
                    if reader.finished:
                        break
            except EventStreamError as exc:
                raise malformed_stream(self.name, f"event stream {exc}") from exc
            except ProviderError as exc:
                exc.provider = self.name
                raise
            if not reader.finished:
                raise truncated_stream(self.name, "message_stop")
            await response.aclose(drain=_DRAIN)
            yield reader.final_chunk()
        finally:
            await response.aclose()

    def _read_frame(self, reader: EventReader, frame: EventStreamMessage) -> Chunk | None:
        kind = frame.message_type
        if kind == "exception":
            raise bedrock_error(self.name, None, frame.exception_type, _message(frame.payload), {})
        if kind == "error":
            message = frame.header(":error-message")
            raise bedrock_error(self.name, None, frame.header(":error-code"), message, {})
        if kind != "event" or frame.event_type != "chunk":
            return None
        try:
            event = orjson.loads(base64.b64decode(orjson.loads(frame.payload)["bytes"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
            raise ProviderError(
                f"{self.name}: malformed chunk frame ({exc})",
                code="upstream_protocol_error",
                retryable=True,
                provider=self.name,
            ) from exc
        metrics = event.get("amazon-bedrock-invocationMetrics") if isinstance(event, dict) else None
        if isinstance(metrics, dict):
            reader.set_usage(metrics.get("inputTokenCount"), metrics.get("outputTokenCount"))
        chunk = reader.read(event)
        if reader.finished and isinstance(metrics, dict):
            reader.set_usage(metrics.get("inputTokenCount"), metrics.get("outputTokenCount"))
        return chunk

    async def warm(self) -> None:
        """Optional: resolve AWS credentials before the first request (call at start-up)."""
        await self._auth.warm()

    async def aclose(self) -> None:
        """Close the HTTP client if this model owns it."""
        if self._owns_client:
            await self._client.aclose()


def _message(payload: bytes) -> str:
    try:
        data = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        return payload[:300].decode("utf-8", "replace")
    if isinstance(data, dict):
        return str(data.get("message") or data.get("Message") or "")
    return ""


def _error_from_response(
    provider: str, status: int, body: bytes, headers: Mapping[str, str]
) -> ProviderError:
    # "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    kind = headers.get("x-amzn-errortype", "").split(":", 1)[0]
    return bedrock_error(provider, status, kind, _message(body), headers)


def bedrock_error(
    provider: str,
    status: int | None,
    kind: str,
    message: str,
    headers: Mapping[str, str],
) -> ProviderError:
    """Map a Bedrock HTTP status and/or exception name (either case) to our tree."""
    where = f"answered {status}" if status is not None else "failed mid-stream"
    text = scrub(
        f"{provider}: upstream {where}: {kind or 'error'}: {message or 'no details'}", None
    )
    name = kind.lower().removesuffix("exception")

    def fail(code: str, retryable: bool) -> ProviderError:
        return ProviderError(
            text, code=code, retryable=retryable, upstream_status=status, provider=provider
        )

    if name in ("throttling", "servicequotaexceeded", "toomanyrequests") or status == 429:
        return RateLimited(
            text,
            retry_after=retry_after_seconds(headers),
            upstream_status=status,
            provider=provider,
        )
    if name == "modeltimeout" or status == 408:
        timeout = ProviderTimeout(text, provider=provider)
        timeout.upstream_status = status
        return timeout
    if name == "validation" and any(hint in message.lower() for hint in _CONTEXT_HINTS):
        return fail("context_length_exceeded", False)
    if name in ("accessdenied", "unrecognizedclient", "expiredtoken") or status in (401, 403):
        return fail("upstream_auth", False)
    if name == "resourcenotfound" or status == 404:
        return fail("model_not_found", False)
    if name == "validation" or status in (400, 413, 422):
        return fail("upstream_bad_request", False)
    if name == "modelnotready":
        return fail("upstream_error", True)
    # internalServer, serviceUnavailable, modelStreamError mid-stream; modelError (424), 5xx.
    return fail("upstream_error", status is None or status >= 500 or status == 424)
