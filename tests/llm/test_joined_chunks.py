"""joined_chunks and read_piece: the events of one network read as few chunks, in order."""

from __future__ import annotations

from daehwa.errors import ProviderError
from daehwa.llm.base import Chunk, joined_chunks, read_piece
from daehwa.messages import ToolCall, Usage

CALL = ToolCall("call_1", "get_weather", {"location": "서울"})


def test_neighbours_of_one_kind_are_joined_in_order() -> None:
    chunks = [
        Chunk(reasoning="생각 "),
        None,
        Chunk(reasoning="중"),
        Chunk(text="안녕"),
        Chunk(text="하세"),
        None,
        Chunk(text="요"),
        Chunk(tool_calls=[CALL]),
        Chunk(text="끝"),
        Chunk(finish_reason="stop", usage=Usage(3, 4)),
    ]
    assert joined_chunks(chunks) == [
        Chunk(reasoning="생각 중"),
        Chunk(text="안녕하세요"),
        Chunk(tool_calls=[CALL]),
        Chunk(text="끝"),
        Chunk(finish_reason="stop", usage=Usage(3, 4)),
    ]


def test_a_chunk_with_text_and_reasoning_is_kept_apart() -> None:
    both = Chunk(text="a", reasoning="b")
    assert joined_chunks([Chunk(text="x"), both, Chunk(text="y")]) == [
        Chunk(text="x"),
        both,
        Chunk(text="y"),
    ]
    assert joined_chunks([]) == []
    assert joined_chunks([None]) == []


def test_read_piece_returns_the_text_before_an_error_and_the_error() -> None:
    started: list[bool] = []

    def read(data: str) -> Chunk | None:
        if data == "bad":
            raise ProviderError("broken", provider="t")
        return Chunk(text=data) if data else None

    chunks, error = read_piece(read, ["안", "", "녕", "bad", "never"], lambda: started.append(True))
    assert chunks == [Chunk(text="안녕")]
    assert isinstance(error, ProviderError)
    assert started == [True]
    chunks, error = read_piece(read, ["", ""], lambda: started.append(True))
    assert (chunks, error, started) == ([], None, [True]), "nothing read: pacing not started"
