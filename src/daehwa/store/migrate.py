"""Schema migrations of the SQL store, run from code (Alembic under the hood).

``SqlStore.migrate`` calls :func:`upgrade` at start-up, so a new version of
daehwa brings an existing database up to date without losing data.
"""

from __future__ import annotations

import ast
import functools
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

# Alembic (with Mako and Pygments, ~40 MB that stay in memory once imported) is
# imported only when a migration has to run; :func:`at_head` checks without it.
VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"

# An arbitrary constant ("daehwa" in ASCII): the PostgreSQL advisory lock that
# keeps two instances starting together from migrating at the same time.
_MIGRATION_LOCK = 0x646165687761


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration of the packaged migrations.

    With ``connection`` the migrations run on it (inside its transaction).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "daehwa.store:migrations")
    config.attributes["connection"] = connection
    return config


def include_object(obj: object, name: str | None, type_: str, *_: object) -> bool:
    """Leave the optional PostgreSQL trigram index out of schema comparisons."""
    from daehwa.store.tables import TRIGRAM_INDEX

    return not (type_ == "index" and name == TRIGRAM_INDEX)


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the database behind ``connection`` to ``revision`` (default: newest)."""
    if connection.dialect.name == "postgresql":
        # Held until the surrounding transaction ends.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or ``None`` before the first migration."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def head_revisions() -> frozenset[str]:
    """The newest revisions of the packaged migrations, read from their files."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        values: dict[str, Any] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets: list[ast.expr]
            if isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            elif isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                    values[target.id] = ast.literal_eval(value)
        if "revision" in values:
            revisions.add(values["revision"])
            down = values.get("down_revision")
            parents.update([down] if isinstance(down, str) else down or ())
    return frozenset(revisions - parents)


def at_head(connection: sqlite3.Connection) -> bool:
    """Whether the SQLite database behind ``connection`` needs no migration."""
    try:
        rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.OperationalError:  # no such table: never migrated
        return False
    return {row[0] for row in rows} == head_revisions()
