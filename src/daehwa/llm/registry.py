"""Configured models by name: ``[models.NAME]`` sections → :class:`ChatModel` objects.

:func:`build_model` builds one model from its section. :class:`ModelRegistry`
builds every configured model once at start-up (so a wrong section fails
fast), gives all models of one upstream origin the same pooled HTTP client,
and closes everything in :meth:`ModelRegistry.aclose`.

Adding a provider: write a builder ``(name, settings, clients) -> ChatModel``
and add it to ``_BUILDERS``. ``clients`` is the shared set of pooled HTTP
clients, or None when the model is built alone (then the model owns its client).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from daehwa.config import ModelSettings, Settings
from daehwa.errors import ConfigError
from daehwa.llm.base import ChatModel
from daehwa.llm.http import UpstreamClient, UpstreamClients
from daehwa.llm.resilience import UpstreamGuards, wrap_models
from daehwa.llm.scripted import ScriptedModel

__all__ = ["ModelRegistry", "build_model"]

log = logging.getLogger(__name__)

Builder = Callable[[str, Settings, UpstreamClients | None], ChatModel]
# Size of each upstream's connection pool: enough for hundreds of concurrent streams.
MAX_CONNECTIONS = 500


def http_client(
    config: ModelSettings, clients: UpstreamClients | None, *, base_url: str | None = None
) -> tuple[UpstreamClient, bool]:
    """The pooled client for a model's upstream, and whether the model must close it."""
    url = base_url or config.base_url
    if clients is not None:
        return clients.get(url), False
    return UpstreamClient(url, max_connections=MAX_CONNECTIONS), True


def _openai(name: str, settings: Settings, clients: UpstreamClients | None) -> ChatModel:
    from daehwa.llm.openai import OpenAIModel

    config = settings.models[name]
    if not config.base_url:
        raise ConfigError(
            f"models.{name}.base_url is required for provider 'openai' "
            "(e.g. https://api.z.ai/api/paas/v4 or http://127.0.0.1:11434/v1)"
        )
    client, owned = http_client(config, clients)
    return OpenAIModel.from_settings(name, config, client, owns_client=owned)


def _scripted(name: str, settings: Settings, clients: UpstreamClients | None) -> ChatModel:
    config = settings.models[name]
    return ScriptedModel(name, reply=config.reply, token_delay=config.token_delay)


def _native(name: str, settings: Settings, clients: UpstreamClients | None) -> ChatModel:
    """``clova``, ``anthropic`` and ``bedrock`` (docs/providers-native.md)."""
    config = settings.models[name]
    if config.provider == "clova":
        from daehwa.llm import clova

        url = config.base_url or clova.DEFAULT_BASE_URL
        client, owned = http_client(config, clients, base_url=url)
        return clova.ClovaModel.from_settings(name, config, client, owns_client=owned)
    if config.provider == "anthropic":
        from daehwa.llm import anthropic

        url = config.base_url or anthropic.DEFAULT_BASE_URL
        client, owned = http_client(config, clients, base_url=url)
        return anthropic.AnthropicModel.from_settings(name, config, client, owns_client=owned)
    from daehwa.llm import bedrock

    client, owned = http_client(config, clients, base_url=bedrock.endpoint_for(config))
    return bedrock.BedrockModel.from_settings(name, config, client, owns_client=owned)


def _local(name: str, settings: Settings, clients: UpstreamClients | None) -> ChatModel:
    from daehwa.llm.local import LocalModel

    return LocalModel.from_settings(settings, name)


_BUILDERS: dict[str, Builder] = {
    "openai": _openai,
    "scripted": _scripted,
    "clova": _native,
    "anthropic": _native,
    "bedrock": _native,
    "local": _local,
}


def build_model(
    name: str, settings: Settings, *, clients: UpstreamClients | None = None
) -> ChatModel:
    """Build the model of ``[models.NAME]``; raises ConfigError naming what is wrong."""
    config = settings.models.get(name)
    if config is None:
        known = ", ".join(sorted(settings.models)) or "none"
        raise ConfigError(f"no [models.{name}] section (configured models: {known})")
    builder = _BUILDERS.get(config.provider)
    if builder is None:
        available = ", ".join(sorted(_BUILDERS))
        raise ConfigError(
            f"models.{name}.provider = {config.provider!r} is not available in this build "
            f"(available: {available})"
        )
    return builder(name, settings, clients)


class ModelRegistry:
    """Every configured model, built once; one pooled HTTP client per upstream origin."""

    def __init__(self, settings: Settings, *, clients: UpstreamClients | None = None) -> None:
        self.settings = settings
        self.clients = clients or UpstreamClients(
            max_connections=max(MAX_CONNECTIONS, settings.resilience.max_concurrency),
            pace=settings.chat.delta_interval,
        )
        self._models: dict[str, ChatModel] = {}
        for name in settings.models:
            self._models[name] = build_model(name, settings, clients=self.clients)
        # Every model goes through the resilience wrapper: retries, failover, one
        # breaker and bulkhead per upstream.
        self.guards = UpstreamGuards(settings.resilience)
        self._models = dict(wrap_models(self._models, settings, self.guards))

    async def warm_up(self) -> None:
        """Load what loads slowly (embedded model files, AWS credentials) before the first turn.

        Failures are logged, not raised: the model answers with the error when asked.
        """
        for name, wrapped in self._models.items():
            inner = getattr(wrapped, "model", wrapped)
            start = getattr(inner, "start", None) or getattr(inner, "warm", None)
            if start is None:
                continue
            try:
                await start()
            except Exception as exc:
                log.warning("model %s is not ready: %s", name, exc)

    def breaker_snapshot(self) -> dict[str, str]:
        """Circuit state per upstream (for /metrics)."""
        return self.guards.states()

    def get(self, name: str) -> ChatModel:
        """The model configured as ``[models.NAME]``."""
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise ConfigError(f"no model named {name!r} (configured: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    async def aclose(self) -> None:
        """Close every model, then the shared HTTP clients."""
        for name, model in self._models.items():
            try:
                await model.aclose()
            except Exception:
                # Keep closing the others; a failed close must not leak their sockets.
                log.exception("closing model %s failed", name)
        await self.clients.aclose()
