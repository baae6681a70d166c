"""ContentGuard policies and reloading the word files without a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daehwa.config import GuardSettings
from daehwa.errors import ConfigError, ContentBlocked
from daehwa.guard import ContentFilter, ContentGuard, FilterHolder, Match

WORDS = ContentFilter(["바보", "fuck"])


def test_block_policy_refuses_and_keeps_the_text() -> None:
    guard = ContentGuard(WORDS, input_policy="block")
    verdict = guard.screen_input("너 바 보 맞지?")
    assert verdict.blocked
    assert verdict.text == "너 바 보 맞지?"
    assert verdict.masked_text == "너 *** 맞지?"
    assert verdict.matches == (Match(2, 5, "바보"),)
    error = verdict.error()
    assert isinstance(error, ContentBlocked)
    assert (error.code, error.status) == ("content_blocked", 422)
    assert "바보" not in error.message  # the client is not told which word


def test_block_policy_lets_clean_text_through() -> None:
    verdict = ContentGuard(WORDS).screen_input("안녕하세요")
    assert not verdict.blocked
    assert verdict.text == verdict.masked_text == "안녕하세요"
    assert verdict.matches == ()


def test_mask_policy_masks_and_goes_on() -> None:
    verdict = ContentGuard(WORDS, input_policy="mask").screen_input("what the FUCK")
    assert not verdict.blocked
    assert verdict.text == "what the ****"


def test_off_policy_does_not_screen() -> None:
    guard = ContentGuard(WORDS, input_policy="off", output_policy="off")
    verdict = guard.screen_input("바보")
    assert (verdict.blocked, verdict.text, verdict.matches) == (False, "바보", ())
    stream = guard.output_filter()
    assert stream.feed("바") + stream.feed("보") == "바보"
    assert guard.mask_output("바보") == "바보"


def test_output_filter_masks_a_stream() -> None:
    guard = ContentGuard(WORDS)
    stream = guard.output_filter()
    assert stream.feed("바") == ""
    assert stream.feed("보 같은") == "** 같은"  # "같은" cannot become a banned word
    assert stream.flush() == ""
    assert guard.mask_output("바보") == "**"


async def test_screen_input_async_long_text_in_a_thread() -> None:
    guard = ContentGuard(WORDS)
    text = "안녕하세요 " * 1000 + "바보"
    verdict = await guard.screen_input_async(text)
    assert verdict.blocked
    assert verdict.matches == (Match(len(text) - 2, len(text), "바보"),)


def _touch(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    # Make the change visible even on file systems with coarse timestamps.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_from_settings_and_reload_without_restart(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("바보\n", encoding="utf-8")
    guard = ContentGuard.from_settings(GuardSettings(words_files=[words], input_policy="mask"))
    assert guard.screen_input("바보 멍청이").text == "** 멍청이"
    holder = guard.holder
    assert holder is not None
    assert not holder.changed()
    assert holder.reload_if_changed() is False

    _touch(words, "바보\n멍청이\n")
    assert holder.changed()
    assert holder.reload_if_changed() is True
    assert guard.screen_input("바보 멍청이").text == "** ***"


async def test_failed_reload_keeps_the_old_filter(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("바보\n", encoding="utf-8")
    holder = FilterHolder([words])
    old = holder.current
    words.write_bytes(b"\xff\xfe bad")
    with pytest.raises(ConfigError, match="not UTF-8"):
        await holder.reload_async()
    assert holder.current is old
    words.write_text("멍청이\n", encoding="utf-8")
    new = await holder.reload_async()
    assert holder.current is new
    assert new.mask("바보 멍청이") == "바보 ***"


def test_no_files_means_an_empty_filter() -> None:
    guard = ContentGuard.from_settings(GuardSettings())
    assert len(guard.filter) == 0
    assert not guard.screen_input("바보").blocked
