"""The GGUF tokenizer on small hand-made vocabularies, and the local token counter seam.

The real models are checked token for token against llama.cpp in test_local_model.py.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from daehwa.config import ModelSettings
from daehwa.context.gguf_tokenizer import (
    GGUFFormatError,
    GGUFTokenizer,
    Vocab,
    _byte_alphabet,
    read_metadata,
)
from daehwa.context.tokens import counter_for, message_tokens, reply_overhead
from daehwa.context.tokens_local import (
    CHATML_TEMPLATE,
    ChatTemplate,
    LocalTokenCounter,
    counter_for_local,
)
from daehwa.messages import Message, Role


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(value: Any) -> tuple[int, bytes]:
    if isinstance(value, bool):
        return 7, struct.pack("<?", value)
    if isinstance(value, int):
        return 4, struct.pack("<I", value)
    if isinstance(value, float):
        return 6, struct.pack("<f", value)
    if isinstance(value, str):
        return 8, _string(value)
    kind, _ = _value(value[0])
    body = b"".join(_value(v)[1] for v in value)
    return 9, struct.pack("<IQ", kind, len(value)) + body


def write_gguf(path: Path, meta: dict[str, Any]) -> Path:
    """A GGUF file with this key-value header and no tensors."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(meta))
    for key, value in meta.items():
        kind, body = _value(value)
        out += _string(key) + struct.pack("<I", kind) + body
    path.write_bytes(out)
    return path


def bpe_meta() -> dict[str, Any]:
    alphabet = _byte_alphabet()
    tokens = [*alphabet, "ab", "abc", "Ġab", "<|im_start|>", "<|im_end|>", "<tool>"]
    types = [1] * (len(alphabet) + 3) + [3, 3, 4]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": ["a b", "ab c", "Ġ ab"],
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.bos_token_id": 0,
    }


def spm_meta() -> dict[str, Any]:
    tokens = ["<pad>", "<bos>", "\n", "▁", "a", "b", "ab", "▁a", "▁ab", "한", "<ctl>"]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    scores = [0.0, 0.0, 0.0, -5.0, -6.0, -6.0, -2.0, -1.0, -0.5, -3.0, 0.0] + [0.0] * 256
    types = [3, 3, 4, 1, 1, 1, 1, 1, 1, 1, 3] + [6] * 256
    return {
        "general.architecture": "gemma3",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_space_prefix": False,
    }


def tokenizer(meta: dict[str, Any]) -> GGUFTokenizer:
    return GGUFTokenizer(Vocab.from_metadata(meta))


def pieces(tok: GGUFTokenizer, text: str, **kw: Any) -> list[str]:
    return [tok.vocab.tokens[i] for i in tok.encode(text, **kw)]


def test_metadata_round_trip_across_parts(tmp_path: Path) -> None:
    whole = write_gguf(tmp_path / "m.gguf", spm_meta()).read_bytes()
    parts = []
    for i, cut in enumerate(range(0, len(whole), 7)):  # tiny parts: every read crosses one
        parts.append(tmp_path / f"p{i}")
        parts[-1].write_bytes(whole[cut : cut + 7])
    meta = read_metadata(parts)
    assert meta["tokenizer.ggml.tokens"][:3] == ["<pad>", "<bos>", "\n"]
    assert meta["tokenizer.ggml.scores"][8] == -0.5
    assert meta["tokenizer.ggml.add_bos_token"] is True


def test_bad_and_truncated_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"GGML" + b"\0" * 40)
    with pytest.raises(GGUFFormatError, match="magic"):
        read_metadata(bad)
    whole = write_gguf(tmp_path / "m.gguf", bpe_meta()).read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(whole[:-10])
    with pytest.raises(GGUFFormatError, match="ends early"):
        read_metadata(cut)


def test_bpe_merges_by_rank_with_byte_level_spaces() -> None:
    tok = tokenizer(bpe_meta())
    assert pieces(tok, "abc") == ["abc"]
    assert pieces(tok, "cab ab") == ["c", "ab", "Ġab"]
    assert pieces(tok, "abd") == ["ab", "d"]
    # Korean is split into UTF-8 bytes when no merge covers it.
    assert len(tok.encode("한")) == 3


def test_bpe_special_tokens_are_parsed_only_when_asked() -> None:
    tok = tokenizer(bpe_meta())
    assert pieces(tok, "<|im_start|>ab<|im_end|>") == ["<|im_start|>", "ab", "<|im_end|>"]
    plain = pieces(tok, "<|im_start|>", parse_special=False)
    assert "<|im_start|>" not in plain and len(plain) > 1
    # User-defined tokens are always split out, as llama.cpp does.
    assert pieces(tok, "a<tool>b", parse_special=False) == ["a", "<tool>", "b"]


def test_spm_merges_by_score_and_falls_back_to_bytes() -> None:
    tok = tokenizer(spm_meta())
    assert pieces(tok, " ab") == ["▁ab"]
    assert pieces(tok, "ab a") == ["ab", "▁a"]
    assert pieces(tok, "한c") == ["한", "<0x63>"]
    assert pieces(tok, "€") == ["<0xE2>", "<0x82>", "<0xAC>"]
    assert pieces(tok, "a\n\nb<ctl>") == ["a", "\n", "\n", "b", "<ctl>"]
    assert pieces(tok, "a", add_bos=True) == ["<bos>", "a"]


def test_chat_template_renders_chatml_fallback() -> None:
    template = ChatTemplate(None)
    assert template.source == CHATML_TEMPLATE
    text = template.render([Message(Role.SYSTEM, "s"), Message(Role.USER, "안녕")])
    assert text == (
        "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\n안녕<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_tojson_is_plain_json() -> None:
    source = "{{ messages[0].tool_calls[0].function.arguments | tojson }}"
    from daehwa.messages import ToolCall

    message = Message(Role.ASSISTANT, "", tool_calls=[ToolCall("c", "f", {"q": "<서울>"})])
    assert ChatTemplate(source).render([message]) == '{"q": "<서울>"}'


def test_counter_counts_the_rendered_prompt_with_bos(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf", spm_meta())
    counter = LocalTokenCounter("gguf:tiny", [path])
    messages = [Message(Role.USER, "ab")]
    rendered = counter.render(messages)
    assert counter.count_messages(messages) == 1 + counter.count(rendered)
    assert counter.count("") == 0 and counter.count("ab a") == 2


def test_counter_is_found_through_the_token_counter_seam(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf", bpe_meta())
    model = ModelSettings(provider="local", model="tiny", options={"path": str(path)})
    counter = counter_for_local(model)
    assert counter is not None and counter.name == "gguf:tiny.gguf"
    assert counter_for(model) is counter
    user, system = Message(Role.USER, "ab abc"), Message(Role.SYSTEM, "abc")
    total = counter.count_messages([system, user])
    # The per-message costs the context window adds up give the exact total.
    assert (
        reply_overhead(counter) + message_tokens(system, counter) + message_tokens(user, counter)
        == total
    )


def test_no_counter_without_a_tokenizer_on_disk(tmp_path: Path) -> None:
    missing = ModelSettings(provider="local", options={"path": str(tmp_path / "none.gguf")})
    assert counter_for_local(missing) is None
    assert counter_for_local(ModelSettings(provider="local", model="not-known")) is None
    assert counter_for_local(ModelSettings(provider="local", options={"bogus": 1})) is None


def test_reply_priming_with_a_template_that_reads_the_first_message(tmp_path: Path) -> None:
    # Regression: Qwen's template indexes messages[0], so rendering no messages failed.
    template = (
        "{% if messages[0]['role'] != 'system' %}<s>a</s>{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}ab ab{% endif %}"
    )
    path = write_gguf(tmp_path / "q.gguf", {**spm_meta(), "tokenizer.chat_template": template})
    counter = LocalTokenCounter("gguf:q", [path])
    assert reply_overhead(counter) == counter.count("ab ab")
