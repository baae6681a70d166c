"""Error bodies of OpenAI-compatible upstreams → :class:`~daehwa.errors.ProviderError`.

Shapes understood (PROVIDERS.md §1, §2, §5)::

    {"error": {"message", "type", "param", "code"}}     OpenAI, Ollama, vLLM
    {"error": {"code": "1302", "message"}}              Z.AI (string code, no type)
    {"error": "Unauthorized"}                           vLLM with a bad key
    {"object": "error", "message", "type", "code"}      older vLLM

Whether a retry may help (``retryable``): 408, 409, 429 and 5xx yes, except
429 for an empty account (``insufficient_quota``, Z.AI ``1113``); 400, 401,
403, 404 and 422 no. An ``x-should-retry`` header overrides the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from daehwa.errors import ProviderError, RateLimited
from daehwa.llm.http import retry_after_seconds

# Z.AI business codes (docs.z.ai api-code): authentication, unknown model, unsafe content.
_ZAI_AUTH = frozenset({"1000", "1001", "1002", "1003", "1004"})
_NO_QUOTA = frozenset({"insufficient_quota", "1113"})
_RATE = frozenset({"1302", "rate_limit_exceeded"})
_CONTEXT = frozenset({"context_length_exceeded", "1261"})
_MAX_MESSAGE = 300


def error_fields(payload: Any) -> tuple[str, str]:
    """``(message, code-or-type)`` from any of the error shapes, as strings."""
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, str):
            return inner, ""
        if isinstance(inner, dict):
            message = inner.get("message") or inner.get("msg") or ""
            code = inner.get("code")
            if code in (None, "") or isinstance(code, int):
                # vLLM puts the HTTP status in "code"; the type says more.
                code = inner.get("type") or code
            return str(message), "" if code is None else str(code)
    if isinstance(payload, str):
        return payload, ""
    return "", ""


def scrub(text: str, secret: str | None) -> str:
    """``text`` without ``secret``, cut to a log-friendly length."""
    if secret:
        text = text.replace(secret, "***")
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def error_from_response(
    provider: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    api_key: str | None = None,
) -> ProviderError:
    """The error for a non-200 answer before any streaming."""
    try:
        payload: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = body.decode("utf-8", "replace").strip()  # an HTML page from a proxy
    message, code = error_fields(payload)
    text = scrub(f"{provider}: upstream answered {status}: {message or 'no details'}", api_key)
    error = _classify(provider, text, code, status, headers)
    should_retry = headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        error.retryable = should_retry == "true"
    return error


def error_from_stream(provider: str, payload: Any, *, api_key: str | None = None) -> ProviderError:
    """The error for a ``data: {"error": …}`` event after a 200."""
    message, code = error_fields(payload)
    text = scrub(f"{provider}: upstream failed mid-stream: {message or 'no details'}", api_key)
    # With no status, an unclassified failure counts as transient server trouble.
    return _classify(provider, text, code, None, {})


def _classify(
    provider: str, text: str, code: str, status: int | None, headers: Mapping[str, str]
) -> ProviderError:
    def fail(kind: str, retryable: bool) -> ProviderError:
        return ProviderError(
            text, code=kind, retryable=retryable, upstream_status=status, provider=provider
        )

    if code in _NO_QUOTA:
        return fail("insufficient_quota", False)
    if status == 429 or code in _RATE:
        return RateLimited(
            text,
            retry_after=retry_after_seconds(headers),
            upstream_status=status,
            provider=provider,
        )
    if code in _CONTEXT:
        return fail("context_length_exceeded", False)
    if code == "1301":
        return fail("content_filtered", False)
    if status in (401, 403) or code in _ZAI_AUTH or code == "invalid_api_key":
        return fail("upstream_auth", False)
    if status == 404 or code in ("1211", "model_not_found"):
        return fail("model_not_found", False)
    if status in (400, 422) or (code.startswith("12") and len(code) == 4):
        return fail("upstream_bad_request", False)
    if status is None or status in (408, 409) or status >= 500:
        return fail("upstream_error", True)
    return fail("upstream_error", False)
