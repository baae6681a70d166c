"""The exception tree of daehwa.

Every error raised on purpose derives from :class:`DaehwaError`. Each carries a
stable ``code`` (what clients match on) and the HTTP ``status`` it maps to::

    DaehwaError
    ├── ConfigError               a setting is missing or wrong (start-up)
    ├── InvalidInput (400)        bad request data; ``field`` names the culprit
    │   └── ContextOverflow (400) even the newest turn cannot fit the token budget
    ├── AuthError (401)           no key, or an unknown or revoked one
    ├── NotFound (404)            missing, or owned by someone else
    ├── Conflict (409)            the request clashes with current state
    ├── ContentBlocked (422)      the content filter refused the input
    ├── Busy (503)                over capacity; try again later
    ├── StoreError (500)          the history store failed
    └── ProviderError (502)       an upstream model failed
        ├── RateLimited (429)     the upstream asked us to slow down
        ├── ProviderTimeout (504) no answer within a deadline
        └── CircuitOpen (503)     the breaker is open; the upstream was not called

Third-party exceptions are translated at the boundary (``raise ... from exc``).
"""

from __future__ import annotations


class DaehwaError(Exception):
    """The root of every error daehwa raises on purpose."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(DaehwaError):
    """A setting is missing or invalid; the message says which and how to fix it."""

    code = "config_error"


class InvalidInput(DaehwaError):
    """The request's data is malformed or out of range."""

    code = "invalid_input"
    status = 400

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class TooLarge(DaehwaError):
    """The request's body is larger than ``[server] max_body_bytes``."""

    code = "too_large"
    status = 413


class ContextOverflow(InvalidInput):
    """Even the newest turn alone does not fit the model's token budget."""

    code = "context_overflow"


class AuthError(DaehwaError):
    """Missing, unknown or revoked credentials."""

    code = "unauthorized"
    status = 401


class NotFound(DaehwaError):
    """The thing does not exist, or belongs to another user (never told apart)."""

    code = "not_found"
    status = 404


class Conflict(DaehwaError):
    """The request clashes with the current state (e.g. a reply is already running)."""

    code = "conflict"
    status = 409


class ContentBlocked(DaehwaError):
    """The content filter refused the input."""

    code = "content_blocked"
    status = 422


class Busy(DaehwaError):
    """Over capacity: a queue or a bulkhead is full."""

    code = "busy"
    status = 503


class StoreError(DaehwaError):
    """The history store failed."""

    code = "store_error"
    status = 500


class ProviderError(DaehwaError):
    """An upstream model call failed.

    ``retryable`` says whether the same call may succeed when tried again;
    ``upstream_status`` is the HTTP status the upstream answered, if any.
    """

    code = "provider_error"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool = False,
        upstream_status: int | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.provider = provider


class RateLimited(ProviderError):
    """The upstream answered 429; ``retry_after`` is its hint in seconds."""

    code = "rate_limited"
    status = 429

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        retryable: bool = True,
        code: str | None = None,
        upstream_status: int | None = 429,
        provider: str | None = None,
    ) -> None:
        super().__init__(
            message,
            code=code,
            retryable=retryable,
            upstream_status=upstream_status,
            provider=provider,
        )
        self.retry_after = retry_after


class ProviderTimeout(ProviderError):
    """No answer (or no next token) within a deadline."""

    code = "provider_timeout"
    status = 504

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message, retryable=True, provider=provider)


class CircuitOpen(ProviderError):
    """The circuit breaker for the upstream is open; no call was made."""

    code = "circuit_open"
    status = 503

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message, retryable=False, provider=provider)
