"""build_model and ModelRegistry: providers by name, one HTTP pool per upstream."""

from __future__ import annotations

from typing import Any

import pytest

from daehwa.config import ChatSettings, ModelSettings, Settings
from daehwa.errors import ConfigError, ProviderError
from daehwa.llm import registry as registry_module
from daehwa.llm.openai import OpenAIModel
from daehwa.llm.registry import ModelRegistry, build_model
from daehwa.llm.scripted import ScriptedModel
from tests.fakes.openai_upstream import DEFAULT_TEXT, FakeOpenAIUpstream
from tests.llm.streams import collect, text_of


def settings(**models: dict[str, Any]) -> Settings:
    sections = {name: ModelSettings(**values) for name, values in models.items()}
    return Settings(models=sections, chat=ChatSettings(default_model=next(iter(sections))))


def test_scripted_model() -> None:
    model = build_model("demo", settings(demo={"provider": "scripted", "reply": "네: {input}"}))
    assert isinstance(model, ScriptedModel)
    assert (model.name, model.reply) == ("demo", "네: {input}")


async def test_openai_model_built_alone_owns_its_client(fake: FakeOpenAIUpstream) -> None:
    config = settings(glm={"provider": "openai", "base_url": fake.base_url, "model": "glm-4.5"})
    model = build_model("glm", config)
    assert isinstance(model, OpenAIModel)
    assert text_of(await collect(model)) == DEFAULT_TEXT
    await model.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await collect(model)


def test_unknown_model_name() -> None:
    with pytest.raises(ConfigError, match=r"no \[models\.nope\] section.*demo"):
        build_model("nope", settings(demo={"provider": "scripted"}))


def test_provider_not_available_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(registry_module._BUILDERS, "openai")
    config = settings(glm={"provider": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"})
    with pytest.raises(ConfigError) as info:
        build_model("glm", config)
    assert "models.glm.provider = 'openai'" in info.value.message
    assert "scripted" in info.value.message


def test_openai_needs_a_base_url() -> None:
    with pytest.raises(ConfigError, match=r"models\.glm\.base_url"):
        build_model("glm", settings(glm={"provider": "openai", "model": "glm-4.5"}))


def test_bad_options_fail_at_registry_start() -> None:
    config = settings(
        glm={
            "provider": "openai",
            "base_url": "http://127.0.0.1:1/v1",
            "model": "m",
            "options": {"thinkng": True},
        }
    )
    with pytest.raises(ConfigError, match="thinkng"):
        ModelRegistry(config)


async def test_registry_shares_one_pool_per_upstream_origin(fake: FakeOpenAIUpstream) -> None:
    config = settings(
        glm={"provider": "openai", "base_url": fake.base_url, "model": "glm-4.5"},
        air={
            "provider": "openai",
            "base_url": fake.url + "/api/coding/paas/v4",
            "model": "glm-4.5-air",
            "options": {"flavor": "zai", "thinking": False},
        },
        other={"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"},
        scripted={"provider": "scripted"},
    )
    models = ModelRegistry(config)
    assert list(models) == ["glm", "air", "other", "scripted"]
    assert len(models) == 4 and "glm" in models and "nope" not in models
    assert len(models.clients.clients()) == 2
    glm, air = models.get("glm"), models.get("air")
    assert models.get("glm") is glm, "built once"
    for model in (glm, air, glm, air):
        assert text_of(await collect(model)).strip("\n") == DEFAULT_TEXT
    assert fake.connections == 1, "both models stream over the same kept-alive connection"
    assert [r.path for r in fake.requests][:2] == [
        "/v1/chat/completions",
        "/api/coding/paas/v4/chat/completions",
    ]
    await models.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await collect(glm)


def test_get_unknown_name() -> None:
    models = ModelRegistry(settings(demo={"provider": "scripted"}))
    with pytest.raises(ConfigError, match=r"'nope'.*demo"):
        models.get("nope")


def test_default_settings_build() -> None:
    models = ModelRegistry(Settings())
    assert isinstance(models.get("scripted").model, ScriptedModel)  # type: ignore[attr-defined]


def test_upstreams_are_paced_by_delta_interval() -> None:
    config = settings(demo={"provider": "scripted"})
    assert ModelRegistry(config).clients.pace == 0.2, "the default"
    config.chat.delta_interval = 0.0
    assert ModelRegistry(config).clients.get("http://127.0.0.1:9/v1").pace == 0.0
    config.chat.delta_interval = 0.1
    assert ModelRegistry(config).clients.get("http://127.0.0.1:9/v1").pace == 0.1
