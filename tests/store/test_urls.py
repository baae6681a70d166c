"""An SQLite store's file is found without SQLAlchemy, as SQLAlchemy would find it."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from daehwa.store.urls import sqlite_database


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///relative/대화.db",
        "sqlite+aiosqlite:////absolute/with%20space.db?mode=ro",
        "sqlite+pysqlite:///~/home.db",
        "sqlite://ignored-host/x.db",
    ],
)
def test_sqlite_database_is_sqlalchemys(url: str) -> None:
    assert sqlite_database(url) == (make_url(url).database or "")


@pytest.mark.parametrize(
    "url", ["postgresql+asyncpg://u@h/db", "redis://h/0", "memory://", "SQLite:///x.db", "x.db"]
)
def test_other_urls_are_left_to_sqlalchemy(url: str) -> None:
    assert sqlite_database(url) is None
