"""Replies whose instance died mid-stream become ``incomplete``, and only those.

Several instances may share one store. A reply is left ``streaming`` for good
when the instance generating it is killed; any instance that sees such a reply
whose run is no longer alive (see :meth:`RunLog.alive`) marks it ``incomplete``.
Replies younger than a few seconds are left alone: a new reply is stored a
moment before its run's log opens.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from daehwa.chat.runs import RunLog
from daehwa.messages import utcnow
from daehwa.store.base import HistoryStore

log = logging.getLogger(__name__)

# How old a streaming reply must be before its run's liveness is checked.
GRACE = timedelta(seconds=5)


async def mark_orphans(store: HistoryStore, runs: RunLog, *, grace: timedelta = GRACE) -> int:
    """Mark ``incomplete`` the streaming replies no live instance is generating."""
    streaming = await store.streaming_replies(created_before=utcnow() - grace)
    if not streaming:
        return 0
    alive = await runs.alive(streaming)
    orphans = [reply_id for reply_id in streaming if reply_id not in alive]
    if not orphans:
        return 0
    return await store.mark_interrupted(orphans)


async def sweep_orphans(store: HistoryStore, runs: RunLog, every: float) -> None:
    """Call :func:`mark_orphans` every ``every`` seconds, forever."""
    while True:
        await asyncio.sleep(every)
        try:
            marked = await mark_orphans(store, runs)
        except Exception:
            log.exception("could not look for replies left streaming by a dead instance")
            continue
        if marked:
            log.warning("%d replies of an instance that stopped were marked incomplete", marked)
