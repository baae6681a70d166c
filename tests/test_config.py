from pathlib import Path

import pytest

from daehwa.config import load_settings
from daehwa.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daehwa.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAEHWA_CONFIG", raising=False)
    settings = load_settings()
    assert settings.chat.default_model in settings.models
    assert settings.resilience.first_token_timeout == 8.0
    assert settings.store_url.startswith("sqlite+aiosqlite:///")


def test_toml_sections_as_in_the_api(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
host = "0.0.0.0"
port = 9001
[store]
url = "postgresql+asyncpg://localhost/test"
[models.glm]
provider = "openai"
base_url = "http://127.0.0.1:9000/v1"
model = "glm-4.5"
api_key_env = "ZAI_API_KEY"
context_window = 4096
max_new_tokens = 512
[chat]
default_model = "glm"
[resilience]
first_token_timeout = 3.5
""",
    )
    settings = load_settings(path)
    assert settings.server.port == 9001
    assert settings.models["glm"].model == "glm-4.5"
    assert settings.chat.default_model == "glm"
    assert settings.resilience.first_token_timeout == 3.5
    assert settings.store_url == "postgresql+asyncpg://localhost/test"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[server]\nport = 9001\n")
    monkeypatch.setenv("DAEHWA_SERVER__PORT", "9002")
    monkeypatch.setenv("DAEHWA_RESILIENCE__FIRST_TOKEN_TIMEOUT", "2")
    settings = load_settings(path)
    assert settings.server.port == 9002
    assert settings.resilience.first_token_timeout == 2.0


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nprot = 9001\n")
    with pytest.raises(ConfigError, match=r"server\.prot: unknown setting"):
        load_settings(path)


def test_invalid_value_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = "many"\n')
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_settings(path)


def test_default_model_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, '[chat]\ndefault_model = "nope"\n')
    with pytest.raises(ConfigError, match="default_model = 'nope'"):
        load_settings(path)


def test_unknown_provider_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.x]\nprovider = "magic"\n')
    with pytest.raises(ConfigError, match=r"models\.x\.provider"):
        load_settings(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(path)
