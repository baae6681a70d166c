"""The reply bound on its own: a slot per running reply, a bounded queue, a clear refusal."""

import asyncio

import pytest

from daehwa.chat.admission import RepliesBusy, ReplySlots


async def test_waiting_turns_are_bounded_and_the_rest_refused_at_once() -> None:
    slots = ReplySlots(1, queue_timeout=30)
    first = await slots.admit()
    queued = asyncio.create_task(slots.admit())
    await asyncio.sleep(0)  # the queued turn starts waiting
    assert slots.waiting == 1
    # One turn waits already (as many as the limit): the next is refused without waiting.
    with pytest.raises(RepliesBusy) as refused:
        await slots.admit()
    assert refused.value.retry_after == 1
    assert slots.snapshot() == {"limit": 1, "in_flight": 1, "waiting": 1, "refused_total": 1}
    first.release()
    first.release()  # a second release gives nothing back twice
    second = await queued
    assert (slots.running, slots.waiting) == (1, 0)
    second.hold_until_done(None)
    assert slots.running == 0


async def test_a_slot_held_by_a_run_comes_back_when_the_run_ends() -> None:
    slots = ReplySlots(1)
    slot = await slots.admit()
    gate = asyncio.Event()
    run = asyncio.create_task(gate.wait())
    slot.hold_until_done(run)  # type: ignore[arg-type]  # any task will do
    slot.release()  # the run holds it now: this is a no-op
    assert slots.running == 1
    with pytest.raises(RepliesBusy):
        await slots.admit()
    gate.set()
    await run
    await asyncio.sleep(0)
    assert slots.running == 0
    (await slots.admit()).release()
