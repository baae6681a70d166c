"""Error responses of OpenAI-compatible upstreams, per flavour (PROVIDERS.md §1, §2, §5)."""

from __future__ import annotations

from typing import Any

ErrorReply = tuple[int, Any, dict[str, str]]


def _openai(message: str, type_: str, code: str | None, param: Any = None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _zai(code: str, message: str) -> Any:
    # Z.AI: the code is a string and there is no "type".
    return {"error": {"code": code, "message": message}}


def error_reply(kind: str, flavor: str, *, legacy: bool = False) -> ErrorReply | None:
    """``(status, json body, headers)`` for an error scenario, or None if ``kind`` streams."""
    zai = flavor == "zai"
    if kind == "rate_limit":
        if zai:
            return (
                429,
                _zai("1302", "High concurrency usage of this API, please reduce concurrency."),
                {},
            )
        headers = {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
        }
        body = _openai("Rate limit reached for requests", "requests", "rate_limit_exceeded")
        return 429, body, headers
    if kind == "quota":
        if zai:
            return 429, _zai("1113", "Insufficient balance or no resource package."), {}
        body = _openai(
            "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
        )
        return 429, body, {}
    if kind == "context_length":
        if zai:
            return 400, _zai("1261", "Prompt exceeds max length"), {}
        message = "This model's maximum context length is 4096 tokens."
        body = _openai(message, "invalid_request_error", "context_length_exceeded", "messages")
        return 400, body, {}
    if kind == "bad_request":
        if zai:
            return 400, _zai("1214", "Invalid parameter: temperature"), {}
        if flavor == "vllm" and legacy:
            flat = {"object": "error", "message": "bad temperature", "type": "BadRequestError"}
            return 400, {**flat, "param": None, "code": 400}, {}
        if flavor == "vllm":
            error = {"message": "bad temperature", "type": "BadRequestError", "code": 400}
            return 400, {"error": error}, {}
        return 400, _openai("bad temperature", "invalid_request_error", None), {}
    if kind == "unauthorized":
        if flavor == "vllm":
            return 401, {"error": "Unauthorized"}, {}
        if zai:
            return 401, _zai("1001", "Authentication failed: header is missing"), {}
        body = _openai("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return 401, body, {}
    if kind == "not_found":
        if zai:
            return 400, _zai("1211", "Unknown model"), {}
        return (
            404,
            _openai("The model does not exist", "invalid_request_error", "model_not_found"),
            {},
        )
    if kind == "server_error":
        return 500, _openai("The server had an error", "server_error", None), {}
    if kind == "overloaded":
        return 503, _openai("The engine is currently overloaded", "server_error", None), {}
    return None
