"""What one server process is made of, opened at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from daehwa.accounts import Accounts
from daehwa.api.deps import AppParts
from daehwa.chat.generate import ModelSource
from daehwa.chat.recovery import mark_orphans, sweep_orphans
from daehwa.chat.runs import MemoryRunLog, RunLog, RunRegistry
from daehwa.chat.service import ChatService
from daehwa.chat.tools import ToolRegistry
from daehwa.config import Settings
from daehwa.context.builder import ContextBuilder
from daehwa.context.summary import Summariser
from daehwa.context.tokens import counter_for
from daehwa.guard import ContentGuard
from daehwa.messages import Conversation
from daehwa.store.base import Store

log = logging.getLogger(__name__)

# How often the word files are checked for changes (a change reloads the filter).
GUARD_WATCH_SECONDS = 10.0


def build_tools(settings: Settings) -> ToolRegistry:
    """The registered tools; the sample weather tool when ``[tools] weather_url`` is set."""
    registry = ToolRegistry()
    if settings.tools.weather_url:
        from daehwa.tools.weather import weather_tool

        registry.add(weather_tool(settings.tools.weather_url, timeout=settings.tools.timeout))
    return registry


def build_context(settings: Settings, models: ModelSource) -> ContextBuilder:
    def model_for(conversation: Conversation) -> object:
        name = settings.context.summary_model or conversation.model or settings.chat.default_model
        return models.get(name)

    name = settings.context.summary_model or settings.chat.default_model
    summariser = Summariser(
        model_for,  # type: ignore[arg-type]
        max_tokens=settings.context.summary_max_tokens,
        counter=counter_for(settings.models[name]),
    )
    return ContextBuilder.from_settings(settings.context, summariser=summariser)


async def open_run_log(settings: Settings) -> RunLog:
    if settings.runs.backend == "redis":
        from daehwa.chat.redis_runs import RedisRunLog

        return await RedisRunLog.connect(
            settings.runs.redis_url,
            prefix=settings.runs.key_prefix,
            ttl=settings.runs.log_ttl,
            heartbeat=settings.runs.heartbeat_seconds,
        )
    return MemoryRunLog(ttl=settings.runs.log_ttl)


async def _watch_words(guard: ContentGuard) -> None:
    holder = guard.holder
    if holder is None or not holder.paths:
        return
    while True:
        await asyncio.sleep(GUARD_WATCH_SECONDS)
        try:
            await asyncio.to_thread(holder.reload_if_changed)
        except Exception:
            log.exception("could not reload the content filter; the old word list stays")


@contextlib.asynccontextmanager
async def assemble(
    settings: Settings, *, store: Store | None = None, models: ModelSource | None = None
) -> AsyncIterator[AppParts]:
    """Open every part (store, models, runs, guard, context, tools) and close them after."""
    async with contextlib.AsyncExitStack() as stack:
        if store is None:
            from daehwa.store import open_store

            store = await open_store(settings)
            stack.push_async_callback(store.aclose)
        if models is None:
            from daehwa.llm.registry import ModelRegistry

            registry = ModelRegistry(settings)
            stack.push_async_callback(registry.aclose)
            warming = asyncio.create_task(registry.warm_up())
            stack.callback(warming.cancel)
            models = registry
        guard = await asyncio.to_thread(ContentGuard.from_settings, settings.guard)
        tools = build_tools(settings)
        stack.push_async_callback(tools.aclose)
        runs = RunRegistry(await open_run_log(settings))
        stack.push_async_callback(runs.aclose)
        if isinstance(runs.log, MemoryRunLog):
            # One instance: whatever is still streaming was cut by this process's last exit.
            interrupted = await store.mark_interrupted()
        else:
            # Other instances may be streaming right now: only replies of dead ones.
            interrupted = await mark_orphans(store, runs.log)
            sweeper = asyncio.create_task(
                sweep_orphans(store, runs.log, settings.runs.sweep_seconds)
            )
            stack.callback(sweeper.cancel)
        if interrupted:
            log.warning("%d replies were interrupted by a previous shutdown", interrupted)
        service = ChatService(
            settings,
            store,
            models,
            runs,
            context=build_context(settings, models),
            guard=guard,
            tools=tools,
        )
        stack.push_async_callback(service.aclose)
        watcher = asyncio.create_task(_watch_words(guard))
        stack.callback(watcher.cancel)
        accounts = Accounts(store, session_days=settings.auth.session_days)
        yield AppParts(settings, store, accounts, service)
