"""The shared ticks of paced upstream reads: phases, their bound, and the schedule."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from daehwa.llm.http_connection import Connection, UpstreamResponse
from daehwa.llm.pacing import PER_PHASE, TICK, Pacer


def test_the_pace_is_cut_into_whole_ticks() -> None:
    pacer = Pacer(0.1)
    assert pacer.phases == round(0.1 / TICK)
    assert pacer.tick * pacer.phases == pytest.approx(0.1)
    shorter = Pacer(TICK / 3)  # a pace below one tick is one tick of its own length
    assert (shorter.phases, shorter.tick) == (1, TICK / 3)
    with pytest.raises(ValueError, match="pace"):
        Pacer(0)


def test_streams_fill_one_phase_up_to_the_bound_before_the_next() -> None:
    pacer = Pacer(0.1)
    phases = [pacer.join() for _ in range(PER_PHASE + 1)]
    assert phases[:PER_PHASE] == [0] * PER_PHASE
    assert phases[PER_PHASE] == 1
    pacer.leave(0)
    # The fullest phase with room takes the next stream, not the emptier one.
    assert pacer.join() == 0
    assert pacer.load()[:3] == [PER_PHASE, 1, 0]


def test_when_every_phase_is_full_the_emptiest_takes_more() -> None:
    pacer = Pacer(0.03)
    for _ in range(pacer.phases * PER_PHASE):
        pacer.join()
    pacer.leave(1)
    pacer.leave(1)
    pacer.join()
    assert pacer.load()[1] == PER_PHASE - 1
    assert pacer.join() == 1
    assert pacer.join() in range(pacer.phases)
    assert sum(pacer.load()) == pacer.phases * PER_PHASE + 1


def test_a_phase_first_tick_is_at_or_after_the_time_asked() -> None:
    pacer = Pacer(0.1)
    for phase in range(pacer.phases):
        for when in (1000.0, 1000.004, 1000.0999, 1000.1):
            tick = pacer.first_tick(phase, when)
            assert tick % pacer.phases == phase
            assert when - 1e-9 <= tick * pacer.tick < when + pacer.pace


class _QuietSocket:
    """Just enough of a Connection for a response fed by hand (its socket never delivers)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.reading = True
        self.response: object = None

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def abort(self) -> None:
        self.reading = False


def _response(pacer: Pacer, socket: _QuietSocket | None = None) -> UpstreamResponse:
    return UpstreamResponse(
        cast(Connection, socket or _QuietSocket()), 10.0, lambda: None, lambda _: None, pacer
    )


async def test_pieces_that_came_as_a_pause_began_go_out_when_nothing_more_comes() -> None:
    socket = _QuietSocket()
    response = _response(Pacer(0.05), socket)
    try:
        response.on_body(b"data: first\n\n")
        assert await anext(response) == b"data: first\n\n"
        response.start_pacing()
        reading = asyncio.ensure_future(anext(response))
        await asyncio.sleep(0)
        assert not socket.reading, "paused right after the hand-over"
        response.on_body(b"data: late\n\n")  # read by the loop as the pause began
        # The socket stays quiet: the piece still goes out after the pace, not never.
        assert await asyncio.wait_for(reading, 2.0) == b"data: late\n\n"
        assert socket.reading
    finally:
        response.abandon()


async def test_streams_started_apart_are_handed_over_on_the_same_ticks() -> None:
    pacer = Pacer(0.1)
    first, second = _response(pacer), _response(pacer)
    try:
        assert first.next_handover is None, "not paced before the first text"
        first.on_body(b"data: a\n\n")
        await anext(first)
        first.start_pacing()
        await asyncio.sleep(0.037)
        second.on_body(b"data: b\n\n")
        await anext(second)
        second.start_pacing()
        assert pacer.load()[0] == 2
        one, two = first.next_handover, second.next_handover
        assert one is not None and two is not None
        # On the same phase: a whole number of paces apart (0 or 1 here).
        assert round((two - one) / 0.1, 6) in (0.0, 1.0)

        # A hand-over moves the next one exactly one pace on, on the same phase.
        reading = asyncio.ensure_future(anext(first))
        await asyncio.sleep(0)
        first.on_body(b"data: c\n\n")
        assert await asyncio.wait_for(reading, 2.0) == b"data: c\n\n"
        assert first.next_handover == pytest.approx(one + 0.1)
    finally:
        first.abandon()
        second.abandon()
    assert pacer.load() == [0] * pacer.phases, "closed responses leave their phase"


async def test_a_stream_handed_over_more_than_a_pace_late_starts_over() -> None:
    pacer = Pacer(0.05)
    response = _response(pacer)
    try:
        response.on_body(b"data: a\n\n")
        await anext(response)
        response.start_pacing()
        due = response.next_handover
        assert due is not None
        await asyncio.sleep(due + 0.12 - asyncio.get_running_loop().time())
        response.on_body(b"data: late\n\n")  # a quiet upstream speaks again
        assert await anext(response) == b"data: late\n\n"
        now = asyncio.get_running_loop().time()
        following = response.next_handover
        assert following is not None
        # Not a burst of catching up: at least half a pace from now, on the same phase.
        assert now + 0.025 - 0.001 <= following < now + 0.075 + 0.001
        assert round((following - due) / 0.05, 6).is_integer()
    finally:
        response.abandon()
