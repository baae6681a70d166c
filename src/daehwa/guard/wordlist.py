"""The operator's word files, and a holder that reloads them without a restart."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from daehwa.errors import ConfigError
from daehwa.guard.filter import ContentFilter

__all__ = ["SAMPLE_WORDS", "FilterHolder", "read_word_files"]

logger = logging.getLogger(__name__)

#: A small Korean and English sample list shipped with daehwa (for trying the filter out).
SAMPLE_WORDS = Path(__file__).with_name("words") / "sample_ko.txt"


def read_word_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The words of UTF-8 files: one a line; blank lines and ``#`` comment lines skipped.

    Raises :class:`ConfigError` naming the file that is missing or not UTF-8.
    """
    words: list[str] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8-sig") as lines:
                for line in lines:
                    word = line.strip()
                    if word and not word.startswith("#"):
                        words.append(word)
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"guard word list {os.fspath(path)!r} is not UTF-8 ({exc.reason} at byte "
                f"{exc.start}); save it as UTF-8 or fix guard.words_files"
            ) from exc
        except OSError as exc:
            raise ConfigError(
                f"cannot read guard word list {os.fspath(path)!r}: {exc.strerror or exc}; "
                f"check guard.words_files"
            ) from exc
    return words


class FilterHolder:
    """The current :class:`ContentFilter` of a set of word files, reloadable.

    Readers take :attr:`current` once per text (or stream) and use that
    filter throughout; :meth:`reload` builds a new filter and swaps it in, so a
    reload never disturbs a scan in progress. If the new files cannot be read,
    the old filter stays and :class:`ConfigError` is raised.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._paths = [Path(p) for p in paths]
        self._lock = threading.Lock()
        self._stamps = self._file_stamps()
        self._current = ContentFilter.from_files(self._paths)
        logger.info(
            "content filter: %d words from %d file(s)", len(self._current), len(self._paths)
        )

    @property
    def current(self) -> ContentFilter:
        """The filter to use now."""
        return self._current

    @property
    def paths(self) -> list[Path]:
        """The word files, in order."""
        return list(self._paths)

    def reload(self) -> ContentFilter:
        """Re-read the files and swap in the new filter (CPU-heavy: ~1 s at 100,000 words)."""
        with self._lock:
            stamps = self._file_stamps()
            new = ContentFilter.from_files(self._paths)
            self._current, self._stamps = new, stamps
        logger.info("content filter reloaded: %d words", len(new))
        return new

    async def reload_async(self) -> ContentFilter:
        """:meth:`reload` in a worker thread, for use from the event loop."""
        return await asyncio.to_thread(self.reload)

    def changed(self) -> bool:
        """Whether a word file changed (size or modification time) since the last load."""
        return self._file_stamps() != self._stamps

    def reload_if_changed(self) -> bool:
        """Reload when a file changed; returns whether it did."""
        if not self.changed():
            return False
        self.reload()
        return True

    def _file_stamps(self) -> list[tuple[int, int] | None]:
        stamps: list[tuple[int, int] | None] = []
        for path in self._paths:
            try:
                info = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((info.st_mtime_ns, info.st_size))
        return stamps
