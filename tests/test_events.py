"""Event payloads: what every transport sends for each event type."""

from __future__ import annotations

import dataclasses

from daehwa.events import Done, Envelope, Meta


def test_meta_and_done_carry_every_field() -> None:
    # data() is written out by hand (no deep copy per reply): it must not miss a field.
    meta = Meta("c1", "u1", "m1", "local", request_id="r1")
    done = Done("m1", "complete", "stop", {"prompt_tokens": 3, "completion_tokens": 5})
    for event in (meta, done):
        assert event.data() == dataclasses.asdict(event)
    assert Meta("c1", "u1", "m1", "local").data()["request_id"] is None


def test_done_usage_is_a_copy() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2}
    envelope = Envelope.of(7, Done("m1", "complete", "stop", usage))
    usage["completion_tokens"] = 99
    assert envelope.data["usage"] == {"prompt_tokens": 1, "completion_tokens": 2}
    assert envelope.seq == 7 and envelope.type == "done" and envelope.terminal
