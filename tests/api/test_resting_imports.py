"""A server loads only the backends its settings name (issue 10: resting memory).

Modules stay in memory once imported, so each backend that is not configured
must not be imported at all: redis.asyncio, asyncpg, numpy, Alembic and
SQLAlchemy cost ~85 MB of a server's resting RSS together. Each check runs in a fresh
interpreter that assembles the app the way ``daehwa serve`` does, without serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ASSEMBLE = """
import asyncio, json, sys
import daehwa.cli  # what `daehwa serve` imports before the app
from daehwa.api.app import create_app
from daehwa.api.assembly import assemble
from daehwa.config import load_settings

settings = load_settings(sys.argv[1])
create_app(settings)

async def start() -> None:
    async with assemble(settings):
        pass

asyncio.run(start())
print(json.dumps(sorted(sys.modules)))
"""

# Never needed by an SQLite store with the in-process run log and recall off.
UNUSED = [
    "redis",
    "asyncpg",
    "numpy",
    "daehwa.store.redis",
    "daehwa.store.postgres",
    "daehwa.chat.redis_runs",
    "daehwa.context.recall",
    "daehwa.llm.anthropic",
    "daehwa.llm.clova",
    "daehwa.llm.bedrock",
    "daehwa.llm.local",
]
# Needed only while a migration runs: not on a database already at the newest revision.
MIGRATION_ONLY = ["alembic", "mako", "sqlalchemy", "aiosqlite"]


def loaded_modules(tmp_path: Path, *, recall: bool = False, store: str = "") -> set[str]:
    config = tmp_path / "daehwa.toml"
    config.write_text(
        f"""
[server]
data_dir = {json.dumps(str(tmp_path / "data"))}

[store]
url = {json.dumps(store)}

[models.up]
provider = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "m"

[chat]
default_model = "up"

[context]
recall = {"true" if recall else "false"}
""",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-c", ASSEMBLE, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_sqlite_server_loads_no_other_backend(tmp_path: Path) -> None:
    first = loaded_modules(tmp_path)
    assert "daehwa.store.sql" in first
    assert sorted(first & set(UNUSED)) == []
    # The first start migrated the new database; the next one finds it current.
    assert "alembic" in first
    again = loaded_modules(tmp_path)
    assert sorted(again & set(UNUSED + MIGRATION_ONLY)) == []


def test_recall_loads_numpy_when_asked_for(tmp_path: Path) -> None:
    assert "daehwa.context.recall" in loaded_modules(tmp_path, recall=True)


@pytest.mark.postgres
def test_postgres_server_runs_alembic_only_to_migrate(
    tmp_path: Path, empty_postgres_url: str
) -> None:
    first = loaded_modules(tmp_path, store=empty_postgres_url)
    assert "alembic" in first
    again = loaded_modules(tmp_path, store=empty_postgres_url)
    assert "asyncpg" in again
    assert sorted(again & {"redis", "numpy", "alembic", "mako", "aiosqlite"}) == []
