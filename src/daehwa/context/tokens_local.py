"""Exact token counts for the embedded model, with its own tokenizer and chat template.

The tokenizer and template come from the GGUF header only (a few MB at the start
of the first part package, or of the file), so counting needs neither the
assembled model nor its weights in memory. ``count_messages`` renders the model's
own chat template (llama.cpp falls back to ChatML when a file has none) and counts
the prompt the runtime will see, BOS included, so it matches the runtime's
``prompt_tokens`` exactly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from daehwa.config import ModelSettings
from daehwa.context.gguf_tokenizer import GGUFFormatError, GGUFTokenizer, Vocab, read_metadata
from daehwa.errors import ConfigError
from daehwa.llm.modelfiles import ModelFileError, known_model, local_options, part_paths
from daehwa.messages import Message, Role

# llama.cpp's template for files that carry none.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages in the shape chat templates expect (tool-call arguments as objects)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role.value, "content": message.content}
        if message.role is Role.ASSISTANT and message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        if message.role is Role.TOOL and message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    # Plain JSON as llama.cpp's engine writes it (jinja2's own filter escapes HTML).
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _raise(message: str) -> None:
    raise ValueError(message)


class ChatTemplate:
    """A model's Jinja chat template, rendered in a sandbox."""

    def __init__(self, source: str | None, *, bos: str = "", eos: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        self.source = source or CHATML_TEMPLATE
        self._template = env.from_string(self.source)
        self._bos, self._eos = bos, eos

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``."""
        return self._template.render(
            messages=template_messages(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=self._bos,
            eos_token=self._eos,
        )


class LocalTokenCounter:
    """Counts tokens exactly as the embedded model's runtime does (a ``TokenCounter``).

    Loading reads the GGUF header and builds the vocabulary (about 1-3 s on the
    first call), so make the first call from a worker thread.
    """

    def __init__(self, name: str, source: Sequence[Path]) -> None:
        self.name = name
        self.source = list(source)
        self._lock = threading.Lock()
        self._tokenizer: GGUFTokenizer | None = None
        self._template: ChatTemplate | None = None

    def _load(self) -> tuple[GGUFTokenizer, ChatTemplate]:
        with self._lock:
            if self._tokenizer is None or self._template is None:
                vocab = Vocab.from_metadata(read_metadata(self.source))
                tokenizer = GGUFTokenizer(vocab)
                bos = vocab.tokens[vocab.bos_id] if vocab.bos_id is not None else ""
                self._template = ChatTemplate(vocab.chat_template, bos=bos)
                self._tokenizer = tokenizer
            return self._tokenizer, self._template

    def load(self) -> GGUFTokenizer:
        """Read the header and build the tokenizer now (blocking; done once)."""
        return self._load()[0]

    def count(self, text: str) -> int:
        """Tokens of ``text`` alone (special tokens parsed, as in a prompt)."""
        if not text:
            return 0
        return self._load()[0].count(text)

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt the runtime builds for ``messages`` with the model's template."""
        return self._load()[1].render(messages)

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens of the whole prompt for ``messages``: template, BOS and reply priming."""
        tokenizer, template = self._load()
        if not messages:
            # Just the reply's priming (templates index messages[0]: measure it by difference).
            probe = [Message(Role.USER, "x")]
            primed = tokenizer.encode(template.render(probe), add_bos=True)
            plain = tokenizer.encode(
                template.render(probe, add_generation_prompt=False), add_bos=True
            )
            return max(0, len(primed) - len(plain))
        return len(tokenizer.encode(template.render(messages), add_bos=True))


_COUNTERS: dict[tuple[str, ...], LocalTokenCounter] = {}
_COUNTERS_LOCK = threading.Lock()


def counter_for_local(model: ModelSettings) -> LocalTokenCounter | None:
    """The exact counter for a local model, or None when its tokenizer is not on disk.

    Reads ``options.path`` when set, else the first part packages of the known model
    (no need for the assembled file). None lets the caller fall back to an estimate.
    """
    try:
        options = local_options("local", model)
    except ConfigError:
        return None
    known = known_model(model)
    if options.path is not None:
        if not options.path.is_file():
            return None
        source, label = [options.path], f"gguf:{options.path.name}"
    elif known is not None:
        try:
            source, label = part_paths(known), f"gguf:{known.id}"
        except ModelFileError:
            return None
    else:
        return None
    key = tuple(str(p) for p in source)
    with _COUNTERS_LOCK:
        counter = _COUNTERS.get(key)
        if counter is None:
            counter = _COUNTERS[key] = LocalTokenCounter(label, source)
    return counter


def check_source(counter: LocalTokenCounter) -> None:
    """Load ``counter`` now, translating a bad file into :class:`ConfigError` (blocking)."""
    try:
        counter.load()
    except (GGUFFormatError, OSError) as exc:
        raise ConfigError(f"cannot read the tokenizer of {counter.source[0]}: {exc}") from exc
