"""A fake Amazon Bedrock runtime: InvokeModelWithResponseStream for Anthropic models.

``POST /model/{model id}/invoke-with-response-stream`` answers
``application/vnd.amazon.eventstream`` frames with valid CRCs (PROVIDERS.md §4):
each ``chunk`` frame's payload is ``{"bytes": base64(Anthropic event), "p": padding}``,
there are no pings, and ``message_stop`` carries
``amazon-bedrock-invocationMetrics``. ``split=1`` cuts every frame inside its
12-byte prelude. The frame encoder here is written apart from the client's
decoder on purpose (and checked against botocore's in the tests).

With ``credentials=(access_key, secret)`` the fake verifies the SigV4 signature
(its own implementation of the algorithm) and answers 403 when it is wrong.

Kinds: the Anthropic fake's stream kinds (text, length, tools, weather, truncate,
cut, stall), throttle_frame and stream_error (an exception frame mid-stream), and
the refusals throttled (429), forbidden (403), validation and context (400),
not_found (404), server_error (500), unavailable (503).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import itertools
import struct
from typing import Any
from urllib.parse import quote, unquote

import orjson

from tests.fakes.anthropic_upstream import AnthropicScript
from tests.fakes.http_server import RecordedRequest, Reply
from tests.fakes.scenario import Scenario, ScriptedUpstream

STREAM_KINDS = ("text", "length", "tools", "weather", "truncate", "cut", "stall")
MID_STREAM = {
    "throttle_frame": (
        "throttlingException",
        "Too many requests, please wait before trying again.",
    ),
    "stream_error": ("modelStreamErrorException", "The model stream failed."),
}
REFUSALS: dict[str, tuple[int, str, str]] = {
    "throttled": (
        429,
        "ThrottlingException",
        "Too many requests, please wait before trying again.",
    ),
    "forbidden": (403, "AccessDeniedException", "You don't have access to the model."),
    "validation": (400, "ValidationException", "temperature: expected maximum 1"),
    "context": (400, "ValidationException", "Input is too long for requested model."),
    "not_found": (404, "ResourceNotFoundException", "Could not resolve the foundation model."),
    "server_error": (500, "InternalServerException", "Internal server error"),
    "unavailable": (503, "ServiceUnavailableException", "Service unavailable"),
}
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_IDS = itertools.count(1)
SUFFIX = "/invoke-with-response-stream"


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream frame with string headers and both CRCs."""
    raw_headers = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw_headers += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", binascii.crc32(message))


def chunk_frame(event: dict[str, Any], number: int) -> bytes:
    """A ``chunk`` event frame wrapping one Anthropic event (padding varies like AWS's)."""
    payload = {
        "bytes": base64.b64encode(orjson.dumps(event)).decode(),
        "p": _PADDING[: 4 + (number * 7) % 50],
    }
    headers = {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_frame(headers, orjson.dumps(payload))


def exception_frame(kind: str, message: str) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_frame(headers, orjson.dumps({"message": message}))


def sigv4_valid(request: RecordedRequest, secret: str, region: str) -> bool:
    """Whether ``request`` carries a correct SigV4 signature for service ``bedrock``."""
    auth = request.headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False
    fields = dict(part.strip().split("=", 1) for part in auth[17:].split(","))
    _, date, scope_region, service, _ = fields["Credential"].split("/")
    if scope_region != region or service != "bedrock":
        return False
    signed = fields["SignedHeaders"].split(";")
    amz_date = request.headers.get("x-amz-date", "")
    path, _, query = request.path.partition("?")
    canonical = "\n".join(
        [
            request.method,
            quote(path, safe="/~"),  # non-S3 services encode the already-encoded path again
            "&".join(sorted(query.split("&"))) if query else "",
            "".join(f"{h}:{' '.join(request.headers.get(h, '').split())}\n" for h in signed),
            ";".join(signed),
            hashlib.sha256(request.raw_body).hexdigest(),
        ]
    )
    scope = f"{date}/{region}/bedrock/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in (date, region, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("Signature", ""))


class FakeBedrockRuntime(ScriptedUpstream):
    """The Bedrock runtime endpoint, for Anthropic models only."""

    KINDS = STREAM_KINDS + tuple(MID_STREAM) + tuple(REFUSALS)

    def __init__(
        self,
        *,
        default: Scenario | str = "text",
        credentials: tuple[str, str] | None = None,
        region: str = "us-east-1",
        port: int = 0,
    ) -> None:
        super().__init__(default=default, port=port)
        self.credentials = credentials
        self.region = region
        #: Model ids as requested (percent-decoded).
        self.model_ids: list[str] = []

    async def handle(self, request: RecordedRequest, reply: Reply) -> None:
        path = request.path.split("?")[0]
        if request.method != "POST" or not path.startswith("/model/") or not path.endswith(SUFFIX):
            await self.refuse(reply, 404, "UnknownOperationException", "unknown operation")
            return
        model_id = unquote(path[len("/model/") : -len(SUFFIX)])
        self.model_ids.append(model_id)
        refusal = self._auth_refusal(request)
        if refusal is not None:
            await self.refuse(reply, 403, *refusal)
            return
        scenario = self.scenario_for(request)
        if scenario.kind in REFUSALS:
            status, kind, message = REFUSALS[scenario.kind]
            await self.refuse(reply, status, kind, message)
            return
        body = request.json if isinstance(request.json, dict) else {}
        extra = [k for k in ("model", "stream") if k in body]
        # We send bedrock-2023-05-31; newer SDKs send other versions, so only presence counts.
        if extra or not body.get("anthropic_version"):
            message = f"extraneous key [{extra[0]}] is not permitted" if extra else "version"
            await self.refuse(reply, 400, "ValidationException", message)
            return
        headers = {
            "content-type": "application/vnd.amazon.eventstream",
            "x-amzn-requestid": f"req-{next(_IDS)}",
            "x-amzn-bedrock-content-type": "application/json",
        }
        await reply.start(200, headers)
        if scenario.ttft:
            await self.hold(reply, scenario.ttft)
        count = itertools.count()
        kind = scenario.kind
        stream_kind = "cut" if kind in MID_STREAM else kind
        script_scenario = dataclasses.replace(scenario, kind=stream_kind)
        script: AnthropicScript

        async def emit(event: dict[str, Any]) -> None:
            if event["type"] == "ping":
                return  # Bedrock sends no pings
            frame = chunk_frame(event, next(count))
            await reply.write(frame, split_at=5 if scenario.split else None, pause=0.002)

        def metrics(event: dict[str, Any]) -> None:
            event["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": script.input_tokens,
                "outputTokenCount": script.sent,
                "invocationLatency": 512,
                "firstByteLatency": 128,
            }

        script = AnthropicScript(
            self, script_scenario, body, reply, emit, model=model_id, on_stop=metrics
        )
        await script.run()
        if kind in MID_STREAM:
            await reply.write(exception_frame(*MID_STREAM[kind]))
        await reply.end()

    def _auth_refusal(self, request: RecordedRequest) -> tuple[str, str] | None:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return None
        if not auth.startswith("AWS4-HMAC-SHA256 ") or "x-amz-date" not in request.headers:
            return "MissingAuthenticationTokenException", "Missing Authentication Token"
        if self.credentials is not None:
            access_key, secret = self.credentials
            if f"Credential={access_key}/" not in auth:
                return "UnrecognizedClientException", "The security token included is invalid."
            if not sigv4_valid(request, secret, self.region):
                return "InvalidSignatureException", "The request signature does not match."
        return None

    async def refuse(self, reply: Reply, status: int, kind: str, message: str) -> None:
        headers = {
            "x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-requestid": f"req-{next(_IDS)}",
        }
        await reply.json(status, {"message": message}, headers)


async def _main() -> None:
    parser = argparse.ArgumentParser(description="fake Amazon Bedrock runtime")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", default="text")
    args = parser.parse_args()
    async with FakeBedrockRuntime(default=args.scenario, port=args.port) as server:
        print(server.url, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main())
