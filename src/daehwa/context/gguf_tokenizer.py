"""A GGUF model's own tokenizer, read from the file's header without touching the weights.

Reproduces llama.cpp's two common vocabularies token for token:

* ``gpt2``: byte-level BPE (Qwen2, Llama 3, GPT-2 pre-tokenizers), merges by rank,
  leftmost first, one merge at a time.
* ``llama``: SentencePiece-style BPE (Gemma, Llama 2), merges by token score with
  byte fallback.

Both first split out special tokens the way llama.cpp does (longest first; control
tokens only when ``parse_special``), since the server tokenises whole chat prompts
with special tokens parsed.
"""

from __future__ import annotations

import heapq
import re
import struct
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

# GGUF value types (gguf.h).
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
# Token types stored in tokenizer.ggml.token_type.
CONTROL, USER_DEFINED, UNUSED = 3, 4, 5
# Texts llama.cpp turns into control tokens even when the file says otherwise (it
# warns "control-looking token"): end-of-generation and fill-in-the-middle markers.
_FORCED_CONTROL = frozenset(
    {
        "</s>",
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
        "_<EOT>",
        "<end_of_utterance>",
        "<|return|>",
        "<|call|>",
        "<|eom_id|>",
        "<|flush|>",
        "<|calls|>",
        "<｜end▁of▁sentence｜>",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    }
)
# Whitespace as llama.cpp's unicode tables define it (not Python's str.isspace).
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


class GGUFFormatError(ValueError):
    """The file is not a GGUF file, or its header is cut short."""


class _ChainedReader:
    """Reads a file given as consecutive parts as if it were one file."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self._file: BinaryIO | None = None

    def read(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            if self._file is None:
                if not self._paths:
                    break
                self._file = self._paths.pop(0).open("rb")
            block = self._file.read(size - len(out))
            if not block:
                self._file.close()
                self._file = None
                continue
            out += block
        return bytes(out)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Cursor:
    """Sequential little-endian decoding over a growing buffer."""

    def __init__(self, reader: _ChainedReader) -> None:
        self._reader = reader
        self._buf = b""
        self._pos = 0

    def _need(self, size: int) -> None:
        if self._pos + size > len(self._buf):
            more = self._reader.read(max(size, 1 << 22))
            self._buf = self._buf[self._pos :] + more
            self._pos = 0
            if size > len(self._buf):
                raise GGUFFormatError("GGUF header ends early")

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self._need(size)
        (value,) = struct.unpack_from("<" + fmt, self._buf, self._pos)
        self._pos += size
        return value

    def string(self) -> str:
        size = self.scalar("Q")
        self._need(size)
        raw = self._buf[self._pos : self._pos + size]
        self._pos += size
        return raw.decode("utf-8", "surrogateescape")

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.scalar("I"), self.scalar("Q")
            if item in _SCALARS:  # numbers in one unpack: fast for 262k scores
                fmt = _SCALARS[item]
                size = struct.calcsize(fmt) * count
                self._need(size)
                values = struct.unpack_from(f"<{count}{fmt}", self._buf, self._pos)
                self._pos += size
                return list(values)
            return [self.value(item) for _ in range(count)]
        if kind not in _SCALARS:
            raise GGUFFormatError(f"unknown GGUF value type {kind}")
        return self.scalar(_SCALARS[kind])


def read_metadata(paths: Path | Sequence[Path]) -> dict[str, Any]:
    """The key-value header of a GGUF file (given whole or as consecutive parts).

    Only the header is read (a few MB), never the tensor data.
    """
    reader = _ChainedReader([paths] if isinstance(paths, Path) else paths)
    try:
        cursor = _Cursor(reader)
        cursor._need(4)
        if cursor._buf[:4] != b"GGUF":
            raise GGUFFormatError("not a GGUF file (bad magic)")
        cursor._pos = 4
        version = cursor.scalar("I")
        if version < 2:
            raise GGUFFormatError(f"GGUF version {version} is not supported")
        cursor.scalar("Q")  # tensor count
        entries = cursor.scalar("Q")
        meta: dict[str, Any] = {}
        for _ in range(entries):
            key = cursor.string()
            meta[key] = cursor.value(cursor.scalar("I"))
        return meta
    finally:
        reader.close()


@lru_cache(maxsize=1)
def _unicode_classes() -> tuple[str, str]:
    """Regex character-class bodies for letters (L*) and numbers (N*), ASCII included."""
    letters: list[tuple[int, int]] = []
    numbers: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))[0]
        target = letters if cat == "L" else numbers if cat == "N" else None
        if target is None:
            continue
        if target and target[-1][1] == cp - 1:
            target[-1] = (target[-1][0], cp)
        else:
            target.append((cp, cp))

    def body(ranges: Iterable[tuple[int, int]]) -> str:
        return "".join(
            re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
            for a, b in ranges
        )

    return body(letters), body(numbers)


def _pre_tokenizer(pre: str) -> re.Pattern[str] | None:
    """The pre-tokenizer regex llama.cpp uses for ``tokenizer.ggml.pre``, or None."""
    letter, number = _unicode_classes()
    contractions = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    tail = (
        rf"[^\r\n{letter}{number}]?[{letter}]+|[{number}]{{DIGITS}}"
        rf"| ?[^{_WS}{letter}{number}]+[\r\n]*|[{_WS}]*[\r\n]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
    )
    if pre in ("qwen2", "deepseek-r1-qwen"):
        return re.compile(contractions + "|" + tail.replace("{DIGITS}", ""))
    if pre in ("llama3", "llama-bpe", "smaug-bpe"):
        return re.compile(contractions + "|" + tail.replace("{DIGITS}", "{1,3}"))
    if pre in ("gpt2", "default"):
        return re.compile(
            rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{letter}]+| ?[{number}]+"
            rf"| ?[^{_WS}{letter}{number}]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
        )
    return None


def _byte_alphabet() -> list[str]:
    """GPT-2's reversible byte -> printable character table."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


@dataclass(slots=True)
class Vocab:
    """What tokenisation needs from a GGUF header."""

    model: str
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float]
    merges: list[str]
    bos_id: int | None
    add_bos: bool
    add_space_prefix: bool
    chat_template: str | None

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Vocab:
        model = str(meta.get("tokenizer.ggml.model", ""))
        tokens = list(meta.get("tokenizer.ggml.tokens", []))
        if not tokens:
            raise GGUFFormatError("the GGUF file has no tokenizer.ggml.tokens")
        bos = meta.get("tokenizer.ggml.bos_token_id")
        return cls(
            model=model,
            pre=str(meta.get("tokenizer.ggml.pre", "default")),
            tokens=tokens,
            types=list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens))),
            scores=list(meta.get("tokenizer.ggml.scores", [0.0] * len(tokens))),
            merges=list(meta.get("tokenizer.ggml.merges", [])),
            bos_id=int(bos) if bos is not None else None,
            # llama.cpp's defaults when the key is absent: SPM adds BOS, BPE does not.
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", model == "llama")),
            add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", model == "llama")),
            chat_template=meta.get("tokenizer.chat_template"),
        )


class GGUFTokenizer:
    """Encodes text exactly as llama.cpp does for a ``gpt2`` or ``llama`` vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        if vocab.model not in ("gpt2", "llama"):
            raise GGUFFormatError(f"tokenizer model {vocab.model!r} is not supported")
        self.vocab = vocab
        self.bos_id = vocab.bos_id if vocab.add_bos else None
        self._ids = {text: i for i, text in enumerate(vocab.tokens)}
        special = [
            (text, i, t == CONTROL or text in _FORCED_CONTROL)
            for i, (text, t) in enumerate(zip(vocab.tokens, vocab.types, strict=False))
            if t in (CONTROL, USER_DEFINED) or text in _FORCED_CONTROL
        ]
        special.sort(key=lambda s: -len(s[0].encode("utf-8", "surrogateescape")))
        # Grouped by first character so a text is only checked for specials it could hold.
        self._special_by_char: dict[str, list[tuple[int, str, int, bool]]] = {}
        for order, (text, token_id, control) in enumerate(special):
            if text:
                self._special_by_char.setdefault(text[0], []).append(
                    (order, text, token_id, control)
                )
        self._words: dict[str, tuple[int, ...]] = {}
        if vocab.model == "gpt2":
            pattern = _pre_tokenizer(vocab.pre)
            if pattern is None:
                raise GGUFFormatError(f"pre-tokenizer {vocab.pre!r} is not supported")
            self._split = pattern
            self._bytes = _byte_alphabet()
            self._ranks: dict[tuple[str, str], int] = {}
            for rank, merge in enumerate(vocab.merges):
                cut = merge.find(" ", 1)
                self._ranks.setdefault((merge[:cut], merge[cut + 1 :]), rank)

    def encode(self, text: str, *, add_bos: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_bos`` adds BOS when the model wants one."""
        out: list[int] = []
        if add_bos and self.bos_id is not None:
            out.append(self.bos_id)
        for piece, token in self._partition(text, parse_special):
            if token is not None:
                out.append(token)
            elif self.vocab.model == "gpt2":
                for word in self._split.findall(piece):
                    out.extend(self._bpe_word(word))
            else:
                out.extend(self._spm(piece))
        return out

    def count(self, text: str) -> int:
        """How many tokens ``text`` takes (special tokens parsed, no BOS)."""
        return len(self.encode(text))

    def _partition(self, text: str, parse_special: bool) -> Iterator[tuple[str, int | None]]:
        """Raw-text fragments and special tokens, split longest special first."""
        found = [
            entry
            for char in set(text) & self._special_by_char.keys()
            for entry in self._special_by_char[char]
            if (parse_special or not entry[3]) and entry[1] in text
        ]
        found.sort()
        fragments: list[tuple[str, int | None]] = [(text, None)]
        for _, special, token_id, _ in found:
            split: list[tuple[str, int | None]] = []
            for fragment, token in fragments:
                if token is not None or special not in fragment:
                    split.append((fragment, token))
                    continue
                pieces = fragment.split(special)
                for i, piece in enumerate(pieces):
                    if i:
                        split.append((special, token_id))
                    if piece:
                        split.append((piece, None))
            fragments = split
        for fragment, token in fragments:
            if token is not None or fragment:
                yield fragment, token

    def _bpe_word(self, word: str) -> tuple[int, ...]:
        cached = self._words.get(word)
        if cached is not None:
            return cached
        parts = [self._bytes[b] for b in word.encode("utf-8", "surrogateescape")]
        ranks = self._ranks
        while len(parts) > 1:
            best, best_rank = -1, len(ranks)
            for i in range(len(parts) - 1):
                rank = ranks.get((parts[i], parts[i + 1]))
                if rank is not None and rank < best_rank:
                    best, best_rank = i, rank
            if best < 0:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        ids: list[int] = []
        for part in parts:
            token = self._ids.get(part)
            if token is not None:
                ids.append(token)
            else:  # not in the vocabulary: one token per byte, as llama.cpp does
                ids.extend(self._ids[c] for c in part if c in self._ids)
        result = tuple(ids)
        if len(self._words) < 200_000:
            self._words[word] = result
        return result

    def _spm(self, text: str) -> list[int]:
        if self.vocab.add_space_prefix:
            text = " " + text
        text = text.replace(" ", "\u2581")
        n = len(text)
        length = [1] * n
        prev = list(range(-1, n - 1))
        nxt = [*range(1, n), -1]
        start = list(range(n))
        ids, scores = self._ids, self.vocab.scores
        heap: list[tuple[float, int, int, int]] = []

        def bigram(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            size = length[left] + length[right]
            token = ids.get(text[start[left] : start[left] + size])
            if token is not None:
                heapq.heappush(heap, (-scores[token], left, right, size))

        for i in range(1, n):
            bigram(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if not length[left] or not length[right] or length[left] + length[right] != size:
                continue  # stale: one side was merged since this pair was queued
            length[left], length[right] = size, 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            bigram(prev[left], left)
            bigram(left, nxt[left])
        out: list[int] = []
        i = 0 if n else -1
        while i >= 0:
            piece = text[start[i] : start[i] + length[i]]
            token = ids.get(piece)
            if token is not None:
                out.append(token)
            else:  # byte fallback: <0xAB> per UTF-8 byte
                for byte in piece.encode("utf-8", "surrogateescape"):
                    fallback = ids.get(f"<0x{byte:02X}>")
                    if fallback is not None:
                        out.append(fallback)
            i = nxt[i]
        return out
